//! Fetch: incremental fetch sessions (KIP-227), `max.wait.ms` and `min.bytes` (a waiting
//! fetch wakes on every append), per-partition and total byte limits, and at least one
//! batch for the first partition with data (KIP-74); the last stable offset, and
//! read_committed (isolation level 1) reading up to it with the aborted transactions of
//! what it read.
//!
//! Sessions: a request with session id 0 and epoch 0 opens a session holding its
//! partitions (answered in full, with the new id); later requests in it carry only the
//! partitions whose fetch offset or limits changed (and the forgotten ones), and the
//! answer carries only the partitions with records, an error, or a high watermark or log
//! start offset that changed since the session last reported them. Epoch -1 fetches
//! without a session (and closes the one named).

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use tokio::time::Instant;
use uuid::Uuid;

use super::{sb, Ctx};
use crate::state::State;

/// At most this many sessions are kept per cluster; the oldest goes first.
const MAX_SESSIONS: usize = 1000;

/// One partition of a fetch: from the request, or remembered by a session.
#[derive(Debug, Clone)]
pub(crate) struct FetchPart {
    topic: String,
    topic_id: Uuid,
    partition: i32,
    fetch_offset: i64,
    max_bytes: i32,
    current_leader_epoch: i32,
    /// What the session last reported: (high watermark, last stable offset, log start
    /// offset).
    reported: Option<(i64, i64, i64)>,
}

/// An incremental fetch session.
#[derive(Debug)]
pub(crate) struct FetchSession {
    node: i32,
    /// The epoch the next request must carry.
    next_epoch: i32,
    parts: Vec<FetchPart>,
    /// When it was last used (for eviction).
    used: Instant,
}

/// The sessions of the cluster.
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    next_id: i32,
    by_id: HashMap<i32, FetchSession>,
}

impl FetchSessions {
    fn open(&mut self, node: i32, parts: Vec<FetchPart>) -> i32 {
        if self.by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(id, _)| *id)
            {
                self.by_id.remove(&oldest);
            }
        }
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let id = self.next_id;
        self.by_id.insert(
            id,
            FetchSession {
                node,
                next_epoch: 1,
                parts,
                used: Instant::now(),
            },
        );
        id
    }
}

/// How the request relates to sessions.
enum Mode {
    /// No session: the request's partitions, all answered.
    Sessionless(Vec<FetchPart>),
    /// A session just opened: all its partitions answered.
    Full(i32),
    /// An existing session: only changed partitions answered.
    Incremental(i32),
}

fn part_name(st: &State, v: i16, name: &str, id: Uuid) -> (String, Uuid) {
    if v >= 13 {
        (st.topic_name_by_id(id).unwrap_or_default(), id)
    } else {
        let id = st.topics.get(name).map_or(Uuid::nil(), |t| t.id);
        (name.to_owned(), id)
    }
}

fn request_parts(st: &State, v: i16, req: &FetchRequest) -> Vec<FetchPart> {
    let mut out = Vec::new();
    for t in &req.topics {
        let (topic, topic_id) = part_name(st, v, t.topic.as_str(), t.topic_id);
        for p in &t.partitions {
            out.push(FetchPart {
                topic: topic.clone(),
                topic_id,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
                reported: None,
            });
        }
    }
    out
}

/// Works out the session the request belongs to, updating it. `Err`: the top-level error.
fn session_mode(ctx: &Ctx, req: &FetchRequest) -> Result<Mode, i16> {
    let v = ctx.version;
    let mut st = ctx.shared.lock();
    let parts = request_parts(&st, v, req);
    if v < 7 {
        return Ok(Mode::Sessionless(parts));
    }
    let (id, epoch) = (req.session_id, req.session_epoch);
    if epoch == -1 {
        st.fetch_sessions.by_id.remove(&id);
        return Ok(Mode::Sessionless(parts));
    }
    if epoch == 0 {
        st.fetch_sessions.by_id.remove(&id);
        let id = st.fetch_sessions.open(ctx.node, parts);
        return Ok(Mode::Full(id));
    }
    let forgotten: Vec<(String, i32)> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let (name, _) = part_name(&st, v, t.topic.as_str(), t.topic_id);
            t.partitions.iter().map(move |p| (name.clone(), *p))
        })
        .collect();
    let Some(s) = st
        .fetch_sessions
        .by_id
        .get_mut(&id)
        .filter(|s| s.node == ctx.node)
    else {
        return Err(ResponseError::FetchSessionIdNotFound.code());
    };
    if epoch != s.next_epoch {
        return Err(ResponseError::InvalidFetchSessionEpoch.code());
    }
    s.parts.retain(|p| {
        !forgotten
            .iter()
            .any(|(t, q)| *t == p.topic && *q == p.partition)
    });
    for np in parts {
        match s
            .parts
            .iter_mut()
            .find(|p| p.topic == np.topic && p.partition == np.partition)
        {
            Some(p) => {
                p.fetch_offset = np.fetch_offset;
                p.max_bytes = np.max_bytes;
                p.current_leader_epoch = np.current_leader_epoch;
            }
            None => s.parts.push(np),
        }
    }
    s.used = Instant::now();
    s.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
    Ok(Mode::Incremental(id))
}

pub(crate) async fn fetch(ctx: &mut Ctx, req: FetchRequest) -> FetchResponse {
    let mode = match session_mode(ctx, &req) {
        Ok(m) => m,
        Err(code) => {
            tracing::debug!(
                node = ctx.node,
                code,
                session = req.session_id,
                epoch = req.session_epoch,
                "fetch session refused"
            );
            return FetchResponse::default().with_error_code(code);
        }
    };
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let deadline = Instant::now() + wait;
    let mut appended = ctx.shared.appended.subscribe();
    loop {
        appended.borrow_and_update();
        let built = build(ctx, &req, &mode);
        let enough = built.bytes >= req.min_bytes.max(0) as usize;
        if enough || built.errors || Instant::now() >= deadline {
            return finish(ctx, &mode, built);
        }
        if tokio::time::timeout_at(deadline, appended.changed())
            .await
            .is_err()
        {
            // Time is up: answer with what there is now.
            let built = build(ctx, &req, &mode);
            return finish(ctx, &mode, built);
        }
    }
}

struct Built {
    /// (topic, topic id, partition data), in request order.
    parts: Vec<(String, Uuid, PartitionData)>,
    /// KIP-951: the nodes named as new leaders.
    endpoints: Vec<NodeEndpoint>,
    bytes: usize,
    errors: bool,
}

/// The session remembers what this response reports; the next epoch is expected.
fn finish(ctx: &Ctx, mode: &Mode, built: Built) -> FetchResponse {
    let v = ctx.version;
    let session_id = match mode {
        Mode::Sessionless(_) => 0,
        Mode::Full(id) | Mode::Incremental(id) => {
            let mut st = ctx.shared.lock();
            if let Some(s) = st.fetch_sessions.by_id.get_mut(id) {
                for (topic, _, pd) in &built.parts {
                    if let Some(p) = s
                        .parts
                        .iter_mut()
                        .find(|p| p.topic == *topic && p.partition == pd.partition_index)
                    {
                        p.reported = Some((
                            pd.high_watermark,
                            pd.last_stable_offset,
                            pd.log_start_offset,
                        ));
                    }
                }
            }
            *id
        }
    };
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (topic, id, pd) in built.parts {
        let same = topics.last().is_some_and(|t| {
            if v >= 13 {
                t.topic_id == id
            } else {
                t.topic.as_str() == topic
            }
        });
        if !same {
            let mut tr = FetchableTopicResponse::default();
            if v >= 13 {
                tr = tr.with_topic_id(id);
            } else {
                tr = tr.with_topic(sb(&topic).into());
            }
            topics.push(tr);
        }
        topics.last_mut().expect("pushed").partitions.push(pd);
    }
    FetchResponse::default()
        .with_session_id(session_id)
        .with_responses(topics)
        .with_node_endpoints(built.endpoints)
}

/// The response as the log stands.
fn build(ctx: &mut Ctx, req: &FetchRequest, mode: &Mode) -> Built {
    let v = ctx.version;
    let read_committed = req.isolation_level == 1;
    let st = ctx.shared.lock();
    let (parts, incremental): (Vec<FetchPart>, bool) = match mode {
        Mode::Sessionless(parts) => (parts.clone(), false),
        Mode::Full(id) | Mode::Incremental(id) => (
            st.fetch_sessions
                .by_id
                .get(id)
                .map(|s| s.parts.clone())
                .unwrap_or_default(),
            matches!(mode, Mode::Incremental(_)),
        ),
    };
    let max_total = if req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut out = Built {
        parts: Vec::new(),
        endpoints: Vec::new(),
        bytes: 0,
        errors: false,
    };
    for fp in &parts {
        let mut pd = PartitionData::default()
            .with_partition_index(fp.partition)
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            // Null but for read_committed answers, as Kafka sends it.
            .with_aborted_transactions(None);
        let p = st.partition(&fp.topic, fp.partition);
        let error = if fp.topic.is_empty() {
            Some(ResponseError::UnknownTopicId.code())
        } else if let Some(code) = ctx.faults.partition_error(&fp.topic, Some(fp.partition)) {
            Some(code)
        } else {
            match p {
                None => Some(ResponseError::UnknownTopicOrPartition.code()),
                Some(p) if p.leader != ctx.node => Some(ResponseError::NotLeaderOrFollower.code()),
                Some(p) if fp.current_leader_epoch > p.leader_epoch => {
                    Some(ResponseError::UnknownLeaderEpoch.code())
                }
                Some(p)
                    if fp.current_leader_epoch >= 0 && fp.current_leader_epoch < p.leader_epoch =>
                {
                    Some(ResponseError::FencedLeaderEpoch.code())
                }
                Some(p)
                    if fp.fetch_offset < p.log.log_start() || fp.fetch_offset > p.log.log_end() =>
                {
                    Some(ResponseError::OffsetOutOfRange.code())
                }
                Some(_) => None,
            }
        };
        if let Some(p) = p {
            pd = pd
                .with_high_watermark(p.log.log_end())
                .with_last_stable_offset(p.txns.last_stable_offset(p.log.log_end()));
            if v >= 5 {
                pd = pd.with_log_start_offset(p.log.log_start());
            }
        }
        if let Some(code) = error {
            out.errors = true;
            // KIP-951: a partition that moved names its leader.
            let moved = code == ResponseError::NotLeaderOrFollower.code()
                || code == ResponseError::FencedLeaderEpoch.code();
            if let (true, true, Some(p)) = (moved, v >= 12, p) {
                if let Some(n) = st.node(p.leader).filter(|n| n.up && n.id != ctx.node) {
                    pd = pd.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(n.id.into())
                            .with_leader_epoch(p.leader_epoch),
                    );
                    if v >= 16 && !out.endpoints.iter().any(|e| e.node_id.0 == n.id) {
                        out.endpoints.push(
                            NodeEndpoint::default()
                                .with_node_id(n.id.into())
                                .with_host(sb(&n.host))
                                .with_port(i32::from(n.port)),
                        );
                    }
                }
            }
            out.parts
                .push((fp.topic.clone(), fp.topic_id, pd.with_error_code(code)));
            continue;
        }
        let p = p.expect("checked above");
        let room = max_total.saturating_sub(out.bytes);
        let limit = (fp.max_bytes.max(0) as usize).min(room);
        // read_committed reads up to the last stable offset, and learns which producers'
        // transactions in what it read were aborted.
        let upper = if read_committed {
            pd.last_stable_offset
        } else {
            i64::MAX
        };
        let (batches, next) = p
            .log
            .read_below(fp.fetch_offset, limit, out.bytes == 0, upper);
        let mut records = BytesMut::new();
        for b in &batches {
            records.extend_from_slice(b);
        }
        out.bytes += records.len();
        let changed = fp.reported
            != Some((
                pd.high_watermark,
                pd.last_stable_offset,
                pd.log_start_offset,
            ));
        if incremental && records.is_empty() && !changed {
            continue;
        }
        if read_committed {
            let aborted = p
                .txns
                .aborted_in(fp.fetch_offset, next)
                .into_iter()
                .map(|(pid, first)| {
                    AbortedTransaction::default()
                        .with_producer_id(pid.into())
                        .with_first_offset(first)
                })
                .collect();
            pd = pd.with_aborted_transactions(Some(aborted));
        }
        pd = pd.with_records(Some(Bytes::from(records)));
        out.parts.push((fp.topic.clone(), fp.topic_id, pd));
    }
    out
}
