//! The background fetcher: one fetch in flight per broker, in an incremental fetch
//! session (KIP-227), never asking for more than the prefetch budget has left.
//!
//! This file holds the fetcher's loop (plan, fetch, settle, metadata refreshes), the
//! types passed between its stages, and the helpers `validate.rs` shares (a partition's
//! failure and backoff, topics to refresh, broker names). The stages: `plan.rs` picks
//! the partitions to fetch from each broker within the budget; `session.rs` sends one
//! Fetch request in its broker's fetch session and decodes the answer; `settle.rs`
//! applies it (batches queued, offsets advanced, errors and backoffs) and resets
//! positions that fell out of range.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::debug;
use uuid::Uuid;

use super::{validate, Inner, Queued, TopicPartition};
use crate::backoff::Backoff;
use crate::error::{Error, Result};

mod plan;
mod session;
mod settle;

use plan::plan;
use session::{fetch, Session};
use settle::{reset_out_of_range, settle};

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
