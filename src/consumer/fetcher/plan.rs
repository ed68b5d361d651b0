//! Planning a round of fetches: which partitions to fetch now from which leader, how many
//! bytes each may return within the prefetch budget, when a fetch should not long-poll,
//! and which partitions have a new leader whose position is validated first (KIP-320).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{add_topic, Want};
use crate::consumer::{Inner, PartState};

/// How recent a pause makes a broker's fetches for partitions at their end short (see
/// `plan`).
const RECENT_PAUSE: Duration = Duration::from_secs(2);

/// The longest such a fetch waits for data.
const SHORT_WAIT: Duration = Duration::from_millis(20);

/// Partitions to fetch now, grouped by leader, with the bytes each request may return.
/// Also the topics whose metadata is missing, and when a partition backing off is due.
#[allow(clippy::type_complexity)]
pub(super) fn plan(
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
    let fetched = |p: &PartState| p.bytes - p.current.as_ref().map_or(0, |c| c.inflated);
    let mut by_node: BTreeMap<i32, Vec<Want>> = BTreeMap::new();
    let mut new_leader = Vec::new();
    // The leaders of the partitions for which `pick` holds.
    let leaders = |pick: &dyn Fn(&PartState) -> bool| -> HashSet<i32> {
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
