//! The background fetcher: one fetch in flight per broker, in an incremental fetch
//! session (KIP-227), never asking for more than the prefetch budget has left.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchRequest, FetchTopic, ForgottenTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use paperboy_protocol::records::{batches, DecodeLimits};
use tokio::task::JoinSet;
use tracing::{debug, warn};
use uuid::Uuid;

use super::{validate, Inner, OffsetReset, Queued, TopicPartition};
use crate::backoff::Backoff;
use crate::client::{IsolationLevel, OffsetSpec};
use crate::error::{Error, KafkaCode, Result};
use crate::telemetry;

/// What a broker's fetch session holds: per partition, the fetch offset, the partition
/// byte cap and the leader epoch last sent.
#[derive(Default)]
struct Session {
    id: i32,
    epoch: i32,
    parts: HashMap<TopicPartition, (i64, i32, i32)>,
}

impl Session {
    fn reset(&mut self) {
        *self = Session::default();
    }
}

/// One partition asked for.
struct Want {
    tp: TopicPartition,
    topic_id: Uuid,
    offset: i64,
    max_bytes: i32,
    leader_epoch: i32,
    gen: u64,
}

/// What came back for one partition.
struct PartResult {
    tp: TopicPartition,
    gen: u64,
    queued: Vec<Queued>,
    bytes: usize,
    next_offset: Option<i64>,
    high_watermark: i64,
    last_stable_offset: i64,
    aborted: Vec<(i64, i64)>,
    error: Option<Error>,
}

struct FetchDone {
    node: i32,
    session: Session,
    reserved: usize,
    wants: Vec<(TopicPartition, u64)>,
    result: Result<Vec<PartResult>>,
}

/// Runs until the consumer is dropped or closed.
pub(super) async fn run(weak: Weak<Inner>) {
    let mut sessions: HashMap<i32, Session> = HashMap::new();
    let mut busy: HashSet<i32> = HashSet::new();
    let mut inflight: JoinSet<FetchDone> = JoinSet::new();
    let mut refresh: Option<tokio::task::JoinHandle<()>> = None;
    let mut last_refresh = Instant::now() - Duration::from_secs(60);
    // Topics whose metadata a failed fetch or validation says is out of date.
    let mut outdated: Vec<String> = Vec::new();
    let mut validating: Option<tokio::task::JoinHandle<Vec<String>>> = None;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let wake = inner.fetch_wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();

        reset_out_of_range(&inner).await;

        if let Some(h) = validating.take_if(|h| h.is_finished()) {
            if let Ok(topics) = h.await {
                merge(&mut outdated, topics);
            }
        }
        if validating.is_none() && validate::pending(&inner) {
            let inner2 = inner.clone();
            validating = Some(tokio::spawn(validate::run(inner2)));
        }

        let (plans, mut stale, next_retry) = plan(&inner, &busy);
        merge(&mut stale, std::mem::take(&mut outdated));
        for (node, wants, max_bytes, max_wait) in plans {
            busy.insert(node);
            let session = sessions.remove(&node).unwrap_or_default();
            let inner2 = inner.clone();
            inflight.spawn(async move {
                let mut session = session;
                let keys = wants.iter().map(|w| (w.tp.clone(), w.gen)).collect();
                let result = fetch(&inner2, node, &mut session, &wants, max_bytes, max_wait).await;
                FetchDone {
                    node,
                    session,
                    reserved: max_bytes as usize,
                    wants: keys,
                    result,
                }
            });
        }
        let refresh_due = last_refresh.elapsed() >= inner.client.config().retry_backoff;
        let can_refresh = refresh.as_ref().is_none_or(|h| h.is_finished()) && refresh_due;
        if !stale.is_empty() && !can_refresh {
            // Asked for again once the refresh under way is done or the backoff passed.
            merge(&mut outdated, std::mem::take(&mut stale));
        }
        if !stale.is_empty() {
            last_refresh = Instant::now();
            let client = inner.client.clone();
            let inner_w = weak.clone();
            refresh = Some(tokio::spawn(async move {
                let names: Vec<&str> = stale.iter().map(String::as_str).collect();
                if let Err(e) = client.refresh_metadata(&names).await {
                    debug!(error = %e, "metadata refresh for fetching failed");
                }
                if let Some(i) = inner_w.upgrade() {
                    i.fetch_wake.notify_one();
                }
            }));
        }
        let mut sleep_for = next_retry
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(5));
        if !outdated.is_empty() {
            sleep_for = sleep_for.min(inner.client.config().retry_backoff);
        }
        tokio::select! {
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                let Ok(done) = done else { continue };
                busy.remove(&done.node);
                let mut done = done;
                let session = std::mem::take(&mut done.session);
                sessions.insert(done.node, session);
                merge(&mut outdated, settle(&inner, done));
            }
            _ = &mut wake => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
}

fn merge(into: &mut Vec<String>, topics: Vec<String>) {
    for t in topics {
        add_topic(into, &t);
    }
}

/// Adds `topic` to the topics whose metadata is to be refreshed, once.
pub(super) fn add_topic(stale: &mut Vec<String>, topic: &str) {
    if !stale.iter().any(|t| t == topic) {
        stale.push(topic.to_owned());
    }
}

/// `host:port` of broker `node`, for errors (`broker N` when the metadata lacks it).
pub(super) fn broker_name(inner: &Inner, node: i32) -> String {
    inner
        .client
        .cluster()
        .brokers
        .get(&node)
        .map_or_else(|| format!("broker {node}"), |b| b.addr())
}

/// How recent a pause makes a broker's fetches for partitions at their end short (see
/// `plan`).
const RECENT_PAUSE: Duration = Duration::from_secs(2);

/// The longest such a fetch waits for data.
const SHORT_WAIT: Duration = Duration::from_millis(20);

/// Partitions to fetch now, grouped by leader, with the bytes each request may return.
/// Also the topics whose metadata is missing, and when a partition backing off is due.
#[allow(clippy::type_complexity)]
fn plan(
    inner: &Arc<Inner>,
    busy: &HashSet<i32>,
) -> (
    Vec<(i32, Vec<Want>, i32, Duration)>,
    Vec<String>,
    Option<Instant>,
) {
    let cfg = &inner.config;
    let cluster = inner.client.cluster();
    let mut st = inner.lock();
    let st = &mut *st;
    let now = Instant::now();
    let mut stale = Vec::new();
    let mut next_retry: Option<Instant> = None;
    let n = st.parts.len().max(1);
    let share = (cfg.prefetch_budget / n).max(1);
    // Of batches as fetched, a partition holds no more than one fetch's worth
    // (`max.partition.fetch.bytes`) ahead of the application, as the Java client (which
    // fetches a partition only when it has nothing buffered): one that keeps up holds
    // little, and the budget bounds one that stalls. Two fetches' worth cost 10-15 MiB of
    // peak RSS at 6 partitions for no measurable throughput.
    let ahead = cfg.partition_max_bytes.max(1) as usize;
    let fetched = |p: &super::PartState| p.bytes - p.current.as_ref().map_or(0, |c| c.inflated);
    let mut by_node: BTreeMap<i32, Vec<Want>> = BTreeMap::new();
    let mut new_leader = Vec::new();
    // The leaders of the partitions for which `pick` holds.
    let leaders = |pick: &dyn Fn(&super::PartState) -> bool| -> HashSet<i32> {
        st.parts
            .iter()
            .filter(|(_, p)| pick(p))
            .filter_map(|(tp, _)| {
                cluster
                    .topic(&tp.topic)
                    .and_then(|t| t.partition(tp.partition))
                    .map(|p| p.leader)
            })
            .collect()
    };
    // Brokers leading a partition that has more to fetch but is held back by the budget:
    // a fetch to them only for partitions at their end would long-poll
    // (`fetch.max.wait.ms`) and hold the broker's one fetch slot while that partition's
    // room comes back, so reading to the end idled half a second at a time. Those
    // partitions wait and go with the next fetch, which has data to return at once.
    let held = leaders(&|p| {
        (p.bytes >= share || fetched(p) >= ahead)
            && !p.paused
            && p.error.is_none()
            && p.position.is_some()
            && p.high_watermark > p.fetch_offset
    });
    // Brokers leading a partition paused in the last `RECENT_PAUSE` with more to read:
    // a pause of the engine's flow control lasts until its handler catches up, and a
    // fetch to such a broker only for partitions at their end would long-poll
    // `fetch.max.wait.ms` and hold the broker's one fetch slot when the partition is
    // resumed (the engine's bulk mode lost about 0.5 s in 2 of 5 runs of
    // engine_throughput). Such a fetch waits `SHORT_WAIT` at most.
    let now_paused = leaders(&|p| {
        p.paused
            && p.paused_at
                .is_some_and(|t| now.duration_since(t) < RECENT_PAUSE)
            && p.position.is_some()
            && p.high_watermark > p.fetch_offset
    });
    for (tp, p) in st.parts.iter_mut() {
        if p.position.is_none()
            || p.paused
            || p.in_flight
            || p.out_of_range
            || p.validate.is_some()
            || p.error.is_some()
            || p.bytes >= share
            || fetched(p) >= ahead
        {
            continue;
        }
        if let Some(t) = p.retry_at {
            if t > now {
                next_retry = Some(next_retry.map_or(t, |n| n.min(t)));
                continue;
            }
            p.retry_at = None;
        }
        let Some(topic) = cluster.topic(&tp.topic) else {
            add_topic(&mut stale, &tp.topic);
            continue;
        };
        let Some(part) = topic.partition(tp.partition).filter(|p| p.leader >= 0) else {
            add_topic(&mut stale, &tp.topic);
            continue;
        };
        if p.leader_epoch >= 0 && part.leader_epoch > p.leader_epoch {
            // A new leader: what was fetched from the old one is dropped, and the
            // position is validated against the new leader's log first (KIP-320).
            new_leader.push((tp.clone(), part.leader_epoch));
            continue;
        }
        if busy.contains(&part.leader) {
            continue;
        }
        if held.contains(&part.leader)
            && p.high_watermark >= 0
            && p.fetch_offset >= p.high_watermark
        {
            continue;
        }
        p.leader_epoch = p.leader_epoch.max(part.leader_epoch);
        let room = (share - p.bytes).min(ahead - fetched(p));
        by_node.entry(part.leader).or_default().push(Want {
            tp: tp.clone(),
            topic_id: topic.id,
            offset: p.fetch_offset,
            max_bytes: (cfg.partition_max_bytes as usize).min(room).max(1) as i32,
            leader_epoch: part.leader_epoch,
            gen: p.gen,
        });
    }
    for (tp, epoch) in new_leader {
        let Some((offset, position_epoch)) =
            st.parts.get(&tp).and_then(|p| st.handed_position(&tp, p))
        else {
            continue;
        };
        debug!(partition = %tp, leader_epoch = epoch, offset, "leader changed; validating the position");
        st.seek_part(&tp, offset);
        if let Some(p) = st.parts.get_mut(&tp) {
            p.position_epoch = position_epoch;
            p.validate = (position_epoch >= 0).then_some(position_epoch);
            if p.validate.is_none() {
                p.leader_epoch = epoch;
            }
        }
    }
    let mut plans = Vec::new();
    for (node, wants) in by_node {
        let left = cfg
            .prefetch_budget
            .saturating_sub(st.buffered + st.reserved);
        if left < 1024.min(cfg.prefetch_budget) {
            break;
        }
        // What the request can return: its partitions' limits added up (a broker returns
        // no more, but for one batch over a partition's limit, KIP-74), within
        // `fetch.max.bytes` and the budget left. Reserving `fetch.max.bytes` instead took
        // a 64 MiB budget's room for two brokers' fetches, and a third broker's
        // partitions were never fetched while the other two long-polled at their end.
        let asked: usize = wants.iter().map(|w| w.max_bytes.max(0) as usize).sum();
        let max_bytes = (cfg.fetch_max_bytes as usize).min(left).min(asked.max(1)) as i32;
        st.reserved += max_bytes as usize;
        for w in &wants {
            if let Some(p) = st.parts.get_mut(&w.tp) {
                p.in_flight = true;
            }
        }
        let at_end = |w: &Want| {
            st.parts
                .get(&w.tp)
                .is_some_and(|p| p.high_watermark >= 0 && w.offset >= p.high_watermark)
        };
        let max_wait = if now_paused.contains(&node) && wants.iter().all(at_end) {
            cfg.fetch_max_wait.min(SHORT_WAIT)
        } else {
            cfg.fetch_max_wait
        };
        plans.push((node, wants, max_bytes, max_wait));
    }
    (plans, stale, next_retry)
}

/// One Fetch request to `node`, in its session; decodes the record sets into batches.
async fn fetch(
    inner: &Arc<Inner>,
    node: i32,
    session: &mut Session,
    wants: &[Want],
    max_bytes: i32,
    max_wait: Duration,
) -> Result<Vec<PartResult>> {
    let cfg = &inner.config;
    let conn = match inner.client.conn_to_node(node).await {
        Ok(c) => c,
        Err(e) => {
            session.reset();
            return Err(e);
        }
    };
    let full = session.epoch == 0;
    let wanted: HashMap<TopicPartition, (i64, i32, i32)> = wants
        .iter()
        .map(|w| (w.tp.clone(), (w.offset, w.max_bytes, w.leader_epoch)))
        .collect();
    let mut topics: BTreeMap<&str, (Uuid, Vec<FetchPartition>)> = BTreeMap::new();
    for w in wants {
        if !full && session.parts.get(&w.tp) == Some(&(w.offset, w.max_bytes, w.leader_epoch)) {
            continue;
        }
        topics
            .entry(&w.tp.topic)
            .or_insert((w.topic_id, Vec::new()))
            .1
            .push(
                FetchPartition::default()
                    .with_partition(w.tp.partition)
                    .with_current_leader_epoch(w.leader_epoch)
                    .with_fetch_offset(w.offset)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(w.max_bytes),
            );
    }
    let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    if !full {
        for tp in session.parts.keys() {
            if !wanted.contains_key(tp) {
                forgotten.entry(&tp.topic).or_default().push(tp.partition);
            }
        }
    }
    let version = conn.version_for::<FetchRequest>()?;
    let name = |t: &str| TopicName(StrBytes::from_string(t.to_owned()));
    // Topic ids of forgotten partitions (Fetch v13+ names topics by id), looked up only
    // when something is forgotten.
    let cluster = (!forgotten.is_empty()).then(|| inner.client.cluster());
    let topic_id = |t: &str| {
        cluster
            .as_ref()
            .and_then(|c| c.topic(t))
            .map_or(Uuid::nil(), |t| t.id)
    };
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level(match cfg.isolation {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        })
        .with_session_id(session.id)
        .with_session_epoch(session.epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, (id, ps))| {
                    FetchTopic::default()
                        .with_topic(name(t))
                        .with_topic_id(id)
                        .with_partitions(ps)
                })
                .collect(),
        )
        .with_forgotten_topics_data(
            forgotten
                .into_iter()
                .map(|(t, ps)| {
                    ForgottenTopic::default()
                        .with_topic(name(t))
                        .with_topic_id(topic_id(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let timeout = inner.client.config().request_timeout + max_wait;
    let resp = match conn.request_at(&req, version, timeout).await {
        Ok(r) => r,
        Err(e) => {
            session.reset();
            // A broker that does not answer a fetch in time, or answers what cannot be
            // read, may not answer the next one either: retry on a fresh connection.
            conn.close(&format!("fetch failed: {e}"));
            return Err(e);
        }
    };
    if let Some(e) = Error::from_code(resp.error_code, None, || {
        format!("fetch from broker {node}")
    }) {
        session.reset();
        return Err(e);
    }
    // Session bookkeeping (KIP-227).
    if full {
        session.id = resp.session_id;
        session.epoch = if resp.session_id == 0 { 0 } else { 1 };
    } else {
        session.epoch = if session.epoch == i32::MAX {
            1
        } else {
            session.epoch + 1
        };
    }
    session.parts = if session.epoch == 0 {
        HashMap::new()
    } else {
        wanted
    };

    let by_id: HashMap<Uuid, &str> = wants
        .iter()
        .map(|w| (w.topic_id, w.tp.topic.as_str()))
        .collect();
    let gens: HashMap<&TopicPartition, u64> = wants.iter().map(|w| (&w.tp, w.gen)).collect();
    let with_data = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter(|p| p.records.as_ref().is_some_and(|r| !r.is_empty()))
        .count();
    let limits = DecodeLimits::default();
    let mut out = Vec::new();
    for t in &resp.responses {
        let topic = if version >= 13 {
            match by_id.get(&t.topic_id) {
                Some(n) => n.to_string(),
                None => continue,
            }
        } else {
            t.topic.to_string()
        };
        for p in &t.partitions {
            let tp = TopicPartition::new(topic.clone(), p.partition_index);
            let Some(&gen) = gens.get(&tp) else { continue };
            let error = Error::from_code(p.error_code, None, || format!("fetch {tp}"));
            let mut result = PartResult {
                tp,
                gen,
                queued: Vec::new(),
                bytes: 0,
                next_offset: None,
                high_watermark: p.high_watermark,
                last_stable_offset: p.last_stable_offset,
                aborted: p
                    .aborted_transactions
                    .iter()
                    .flatten()
                    .map(|a| (a.producer_id.0, a.first_offset))
                    .collect(),
                error,
            };
            if let Some(records) = p.records.as_ref().filter(|r| !r.is_empty()) {
                // With several partitions in one response, each gets its own copy, so
                // its buffered bytes are exactly what it holds.
                let records: Bytes = if with_data > 1 {
                    Bytes::copy_from_slice(records)
                } else {
                    records.clone()
                };
                let total = records.len();
                let mut counted = 0;
                let mut iter = batches(records, limits);
                for b in iter.by_ref() {
                    match b {
                        Ok(batch) => {
                            counted += batch.size();
                            result.next_offset = Some(batch.next_offset());
                            result.queued.push(Queued {
                                bytes: batch.size(),
                                batch: Ok(batch),
                            });
                        }
                        Err(e) => {
                            result.queued.push(Queued {
                                bytes: 0,
                                batch: Err(e),
                            });
                        }
                    }
                }
                if let Some(last) = result.queued.last_mut() {
                    last.bytes += total - counted;
                }
                result.bytes = total;
                if result.queued.is_empty() {
                    result.bytes = 0;
                }
            }
            out.push(result);
        }
    }
    Ok(out)
}

/// A failed fetch (or validation) of a partition: back off, exponentially to
/// retry.backoff.max.ms; once it has failed for fetch.error.timeout.ms, surface the error
/// once per period. True when a fault was raised (`recv` should wake).
pub(super) fn note_failure(
    inner: &Inner,
    tp: &TopicPartition,
    p: &mut super::PartState,
    e: &Error,
    broker: &dyn Fn() -> String,
) -> bool {
    let cfg = inner.client.config();
    let now = Instant::now();
    p.failures = p.failures.saturating_add(1);
    let since = *p.failing_since.get_or_insert(now);
    p.retry_at = Some(now + Backoff::of(cfg).delay(p.failures));
    if now.duration_since(since) >= inner.config.fetch_error_timeout && p.fault.is_none() {
        p.fault = Some(Error::FetchFailed {
            partition: tp.to_string(),
            broker: broker(),
            failing_for: now.duration_since(since),
            cause: Box::new(e.clone()),
        });
        p.failing_since = Some(now);
        return true;
    }
    false
}

/// Applies a finished fetch: queues batches of partitions still assigned at the same
/// generation, advances fetch offsets, records errors and backoffs. Returns the topics
/// whose metadata should be refreshed (the leader moved or could not be reached).
fn settle(inner: &Arc<Inner>, done: FetchDone) -> Vec<String> {
    let mut stale: Vec<String> = Vec::new();
    let mut st = inner.lock();
    let st = &mut *st;
    st.reserved = st.reserved.saturating_sub(done.reserved);
    for (tp, gen) in &done.wants {
        if let Some(p) = st.parts.get_mut(tp) {
            if p.gen == *gen {
                p.in_flight = false;
            }
        }
    }
    let mut arrived = false;
    // Looked up only for an error (not on every fetch).
    let broker = || broker_name(inner, done.node);
    let failed = |tp: &TopicPartition, p: &mut super::PartState, e: &Error| {
        note_failure(inner, tp, p, e, &broker)
    };
    let mut faulted = false;
    match done.result {
        Err(e) => {
            telemetry::error("receive", inner.config.client.client_id(), &e);
            // Said once per failing spell (a dead broker fails every retry until the
            // metadata names a new leader); the retries are debug.
            let first = done
                .wants
                .iter()
                .any(|(tp, _)| st.parts.get(tp).is_some_and(|p| p.failures == 0));
            if first {
                warn!(broker = %broker(), error = %e, "fetch failed; retrying on a fresh connection");
            } else {
                debug!(broker = %broker(), error = %e, "fetch failed again; retrying");
            }
            for (tp, gen) in &done.wants {
                if let Some(p) = st.parts.get_mut(tp).filter(|p| p.gen == *gen) {
                    faulted |= failed(tp, p, &e);
                    // The broker may be gone and its partitions led elsewhere now.
                    add_topic(&mut stale, &tp.topic);
                }
            }
        }
        Ok(results) => {
            for r in results {
                let Some(p) = st.parts.get_mut(&r.tp) else {
                    continue;
                };
                if p.gen != r.gen {
                    continue;
                }
                if r.high_watermark >= 0 {
                    p.high_watermark = r.high_watermark;
                    if let Some(pos) = p.position {
                        p.metrics.lag(
                            &st.metrics,
                            &p.topic,
                            r.tp.partition,
                            r.high_watermark - pos,
                        );
                    }
                }
                if r.last_stable_offset >= 0 {
                    p.last_stable_offset = r.last_stable_offset;
                }
                if let Some(e) = r.error {
                    telemetry::error("receive", inner.config.client.client_id(), &e);
                    match e.kafka_code() {
                        Some(KafkaCode::OffsetOutOfRange) => {
                            warn!(partition = %r.tp, offset = p.fetch_offset, "offset out of range");
                            p.retry_at = None;
                            p.out_of_range = true;
                        }
                        _ if e.is_retriable() || e.is_stale_metadata() => {
                            debug!(partition = %r.tp, error = %e, "fetch of partition will be retried");
                            faulted |= failed(&r.tp, p, &e);
                            if e.is_stale_metadata() {
                                add_topic(&mut stale, &r.tp.topic);
                            }
                        }
                        _ => p.error = Some(e),
                    }
                    continue;
                }
                p.failures = 0;
                p.failing_since = None;
                p.aborted.extend(r.aborted);
                if !r.queued.is_empty() {
                    arrived = true;
                }
                p.queue.extend(r.queued);
                p.bytes += r.bytes;
                st.buffered += r.bytes;
                if let Some(next) = r.next_offset {
                    p.fetch_offset = p.fetch_offset.max(next);
                }
            }
        }
    }
    st.metrics.prefetch(st.buffered);
    if arrived || faulted {
        inner.ready.notify_waiters();
    }
    stale
}

/// Resets partitions whose fetch offset fell out of range, by `auto.offset.reset`.
async fn reset_out_of_range(inner: &Arc<Inner>) {
    let todo: Vec<(TopicPartition, u64)> = {
        let st = inner.lock();
        st.parts
            .iter()
            .filter(|(_, p)| p.out_of_range && !p.in_flight)
            .map(|(tp, p)| (tp.clone(), p.gen))
            .collect()
    };
    for (tp, gen) in todo {
        let spec = match inner.config.offset_reset {
            OffsetReset::Earliest => Some(OffsetSpec::Earliest),
            OffsetReset::Latest => Some(OffsetSpec::Latest),
            OffsetReset::Error => None,
        };
        let offset = match spec {
            Some(spec) => Some(
                inner
                    .client
                    .list_offset(&tp.topic, tp.partition, spec)
                    .await,
            ),
            None => None,
        };
        let mut st = inner.lock();
        let st = &mut *st;
        let Some(p) = st.parts.get_mut(&tp).filter(|p| p.gen == gen) else {
            continue;
        };
        p.out_of_range = false;
        match offset {
            Some(Ok(o)) => {
                warn!(partition = %tp, offset = o, "reset by auto.offset.reset");
                st.seek_part(&tp, o);
            }
            Some(Err(e)) => {
                p.out_of_range = true;
                p.retry_at = Some(Instant::now() + inner.client.config().retry_backoff);
                debug!(partition = %tp, error = %e, "offset reset failed");
            }
            None => p.error = Some(Error::NoOffset(format!("{tp} at {}", p.fetch_offset))),
        }
    }
}
