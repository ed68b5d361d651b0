//! Membership of a consumer-protocol group (KIP-848, `group.protocol=consumer`): the
//! heartbeat loop and the reconciliation of the owned partitions with the target
//! assignment the coordinator sends, as the Java client's ConsumerMembershipManager.
//!
//! - The heartbeat loop (a task) sends ConsumerGroupHeartbeat at the interval the
//!   coordinator returns, and at once when this member has something to say (a new
//!   subscription, partitions reconciled, a rejoin). It keeps the member epoch and the
//!   latest target assignment, and asks the consumer to reconcile when the target
//!   differs from what it owns.
//! - Reconciliation runs where the classic rebalance runs (a task started by `recv`, so
//!   the [`RebalanceListener`](super::RebalanceListener) is awaited there): partitions no
//!   longer assigned are revoked first (listener, auto-commit, dropped), then the new
//!   ones are added (listener; their committed offsets are fetched before reading), and
//!   the owned set goes out in the next heartbeat, sent right away. Revocations are
//!   incremental: partitions kept are never revoked.
//! - Fenced (UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH): the partitions are lost, so the
//!   listener's `on_lost` runs (by default its `on_revoked`) but nothing is committed
//!   (the coordinator would refuse it, and they may be someone else's by now); then the
//!   member rejoins with epoch 0 and the same member id. Commits made before stay.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use uuid::Uuid;

use super::group::Membership;
use super::group_848::{
    is_fatal, is_fenced, new_member_id, Beat, Subscription, TopicIdPartitions, JOIN_EPOCH,
    LEAVE_EPOCH, LEAVE_STATIC_EPOCH,
};
use super::{Consumer, Inner, PartState, TopicPartition};
use crate::error::{KafkaCode, Result};

/// What a consumer-protocol member keeps between heartbeats.
#[derive(Debug)]
pub(super) struct State848 {
    /// Made once per consumer, kept across rejoins (KIP-1082).
    pub member_id: String,
    /// The member epoch the coordinator last gave (0: joining).
    pub epoch: i32,
    /// The subscribed pattern, when subscribed by regular expression.
    pub pattern: Option<String>,
    /// Bumped by each subscribe; `subscription_sent` is the one the coordinator has.
    pub subscription_version: u64,
    pub subscription_sent: u64,
    /// The subscription whose topics were asked for (`allow.auto.create.topics`).
    pub checked_version: u64,
    /// The latest target assignment from the coordinator (`None`: none since joining).
    pub target: Option<TopicIdPartitions>,
    /// The owned partitions, by topic id; `owned_version` bumps on each change and
    /// `owned_sent` is the version the coordinator has.
    pub owned: TopicIdPartitions,
    pub owned_version: u64,
    pub owned_sent: u64,
    /// Partitions of the target whose topic id did not resolve to a name yet.
    pub unresolved: bool,
    /// Fenced (or left after max.poll.interval.ms): the partitions are to be dropped
    /// without committing; the heartbeat loop waits for that, then rejoins.
    pub lost: bool,
    /// The interval the coordinator asks for (none before its first answer).
    pub interval: Option<Duration>,
    /// Heartbeats answered so far (commits refused with STALE_MEMBER_EPOCH wait for the
    /// next one).
    pub answered: u64,
}

impl Default for State848 {
    fn default() -> Self {
        State848 {
            member_id: new_member_id(),
            epoch: JOIN_EPOCH,
            pattern: None,
            subscription_version: 0,
            subscription_sent: 0,
            checked_version: 0,
            target: None,
            owned: TopicIdPartitions::new(),
            owned_version: 0,
            owned_sent: 0,
            unresolved: false,
            lost: false,
            interval: None,
            answered: 0,
        }
    }
}

impl State848 {
    fn membership(&self) -> Option<Membership> {
        (self.epoch > 0).then(|| Membership {
            member_id: self.member_id.clone(),
            generation: self.epoch,
        })
    }

    /// Whether the target differs from what is owned (or names topics not resolved).
    fn needs_reconcile(&self) -> bool {
        self.unresolved || self.target.as_ref().is_some_and(|t| *t != self.owned)
    }
}

impl Consumer {
    /// Subscribes, with `group.protocol=consumer`, to every topic whose name matches
    /// `pattern`, a regular expression the broker evaluates (RE2/J syntax, e.g.
    /// `orders-.*`). Topics created later that match are assigned too, as the broker
    /// notices them. Replaces an earlier subscription.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) without a `group.id`, after
    /// [`assign`](Self::assign), or with `group.protocol=classic` (which has no
    /// broker-side patterns).
    pub fn subscribe_pattern(&self, pattern: &str) -> Result<()> {
        if self.inner.config.group_protocol != super::GroupProtocol::Consumer {
            return Err(crate::config::invalid(
                "group.protocol",
                "classic",
                "consumer, to subscribe by regular expression (the broker evaluates it)",
            )
            .into());
        }
        self.subscribe_to(&[], Some(pattern.to_owned()))
    }

    /// The consumer-protocol part of `subscribe`: the subscription changed.
    pub(super) fn subscribed_848(&self, st: &mut super::State, pattern: Option<String>) {
        st.kip848.pattern = pattern;
        st.kip848.subscription_version += 1;
        self.inner.hb_wake.notify_one();
    }

    /// Reconciles the owned partitions with the target assignment: revoke, then add,
    /// then acknowledge; or drops lost partitions after fencing. Runs in the rebalance
    /// task (see `start_rebalance`).
    pub(super) async fn reconcile_848(&self) -> Result<()> {
        self.ensure_heartbeat();
        self.create_subscribed_topics().await;
        loop {
            let (lost, target) = {
                let mut st = self.inner.lock();
                if st.mode != super::Mode::Subscribed || !st.rejoin {
                    return Ok(());
                }
                st.rejoin = false;
                (st.kip848.lost, st.kip848.target.clone())
            };
            if lost {
                self.lose_all().await;
                continue;
            }
            let Some(target) = target else { continue };
            let (assigned, ids, unresolved) = self.resolve(&target).await;
            let owned: BTreeSet<TopicPartition> = self.inner.lock().parts.keys().cloned().collect();
            let revoked: Vec<_> = owned.difference(&assigned).cloned().collect();
            let added: Vec<_> = assigned.difference(&owned).cloned().collect();
            if !revoked.is_empty() {
                self.revoke(&revoked).await;
            }
            {
                let mut st = self.inner.lock();
                if st.kip848.lost {
                    // Fenced while the listener ran: what is left is lost, not kept.
                    st.rejoin = true;
                    continue;
                }
                for tp in &added {
                    st.parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(tp));
                }
                let mut now = TopicIdPartitions::new();
                for tp in st.parts.keys() {
                    if let Some(id) = ids.get(&tp.topic) {
                        now.entry(*id).or_default().insert(tp.partition);
                    }
                }
                if now != st.kip848.owned {
                    st.kip848.owned = now;
                    st.kip848.owned_version += 1;
                }
                st.kip848.unresolved = unresolved;
                info!(
                    member = %st.kip848.member_id,
                    epoch = st.kip848.epoch,
                    revoked = revoked.len(),
                    added = added.len(),
                    owned = st.parts.len(),
                    "reconciled the assignment"
                );
            }
            // Acknowledge at once: the coordinator moves partitions on only when their
            // previous owners say they let them go.
            self.inner.hb_wake.notify_one();
            if !added.is_empty() {
                if let Some(l) = self.listener() {
                    l.on_assigned(self, &added).await;
                }
            }
            self.inner.fetch_wake.notify_one();
        }
    }

    /// With `allow.auto.create.topics=true`, asks for the metadata of newly subscribed
    /// topics, so that the broker creates the missing ones (as the classic protocol's
    /// leader does; the coordinator itself never creates a topic).
    async fn create_subscribed_topics(&self) {
        if !self.inner.client.config().allow_auto_create_topics {
            return;
        }
        let (version, topics) = {
            let st = self.inner.lock();
            let k = &st.kip848;
            if k.pattern.is_some() || k.checked_version == k.subscription_version {
                return;
            }
            (k.subscription_version, st.topics.clone())
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        if let Err(e) = self.inner.client.refresh_metadata(&names).await {
            debug!(error = %e, "metadata of the subscribed topics");
        }
        self.inner.lock().kip848.checked_version = version;
    }

    /// Drops every partition after fencing: the listener's `on_lost`, no commit.
    async fn lose_all(&self) {
        let owned: Vec<TopicPartition> = self.inner.lock().parts.keys().cloned().collect();
        if !owned.is_empty() {
            warn!(
                partitions = owned.len(),
                "fenced by the group coordinator: partitions lost (not committed)"
            );
            if let Some(l) = self.listener() {
                l.on_lost(self, &owned).await;
            }
        }
        let mut st = self.inner.lock();
        for tp in &owned {
            st.remove_part(tp);
        }
        st.kip848.lost = false;
        st.kip848.target = None;
        st.kip848.owned.clear();
        st.kip848.owned_version += 1;
        st.kip848.unresolved = false;
        drop(st);
        self.inner.hb_wake.notify_one();
        self.inner.fetch_wake.notify_one();
    }

    /// The target's partitions by name, the topic ids of the names, and whether some
    /// topic id is not known yet (metadata is refreshed once for it).
    async fn resolve(
        &self,
        target: &TopicIdPartitions,
    ) -> (BTreeSet<TopicPartition>, BTreeMap<String, Uuid>, bool) {
        let client = &self.inner.client;
        let mut cluster = client.cluster();
        if target.keys().any(|id| cluster.topic_name(id).is_none()) {
            match client.refresh_all_metadata().await {
                Ok(c) => cluster = c,
                Err(e) => debug!(error = %e, "metadata for the assignment's topic ids"),
            }
        }
        let mut assigned = BTreeSet::new();
        let mut ids = BTreeMap::new();
        let mut unresolved = false;
        for (id, parts) in target {
            match cluster.topic_name(id) {
                Some(name) => {
                    ids.insert(name.to_owned(), *id);
                    assigned.extend(parts.iter().map(|p| TopicPartition::new(name, *p)));
                }
                None => {
                    debug!(topic_id = %id, "assigned topic id not in the metadata yet");
                    unresolved = true;
                }
            }
        }
        (assigned, ids, unresolved)
    }

    /// Leaves the group (close): epoch -1, or -2 for a static member, whose assignment
    /// the coordinator keeps for the session timeout.
    pub(super) async fn leave_848(&self) {
        let Some(group) = &self.inner.group else {
            return;
        };
        let (member_id, epoch) = {
            let st = self.inner.lock();
            (st.kip848.member_id.clone(), st.kip848.epoch)
        };
        if epoch <= 0 {
            return; // not a member (never joined, or fenced and not back)
        }
        let beat = Beat {
            member_id: member_id.clone(),
            member_epoch: if self.inner.config.group_instance_id.is_some() {
                LEAVE_STATIC_EPOCH
            } else {
                LEAVE_EPOCH
            },
            rebalance_timeout: self.inner.config.max_poll_interval,
            subscription: None,
            server_assignor: None,
            owned: None,
        };
        match group.consumer_heartbeat(&beat).await {
            Ok(_) => info!(group = group.group_id(), member = %member_id, "left the group"),
            Err(e) => warn!(group = group.group_id(), error = %e, "leaving the group failed"),
        }
        self.inner.lock().kip848.epoch = JOIN_EPOCH;
    }

    /// Runs `op` (a commit or an offset fetch carrying the member epoch) again after
    /// the next heartbeat answer when the coordinator says the epoch is stale, until
    /// the API deadline (`default.api.timeout.ms`).
    pub(super) async fn retry_stale_epoch<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut(Option<Membership>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = self.inner.client.deadline();
        loop {
            let (member, answered) = {
                let st = self.inner.lock();
                (st.kip848.membership(), st.kip848.answered)
            };
            match op(member).await {
                Err(e)
                    if e.kafka_code() == Some(KafkaCode::StaleMemberEpoch)
                        && Instant::now() < deadline =>
                {
                    debug!(error = %e, "stale member epoch: retrying after the next heartbeat");
                    self.inner.hb_wake.notify_one();
                    let until =
                        deadline.min(Instant::now() + self.inner.client.config().request_timeout);
                    while self.inner.lock().kip848.answered == answered && Instant::now() < until {
                        let beat = self.inner.hb_answered.notified();
                        tokio::pin!(beat);
                        beat.as_mut().enable();
                        if self.inner.lock().kip848.answered != answered {
                            break;
                        }
                        let _ = tokio::time::timeout_at(until.into(), beat).await;
                    }
                }
                other => return other,
            }
        }
    }
}

/// Whether `st`'s consumer-protocol member has to reconcile (after a heartbeat answer).
fn flag_reconcile(st: &mut super::State) {
    if st.kip848.lost || st.kip848.needs_reconcile() {
        st.rejoin = true;
    }
}

/// The heartbeat loop of a consumer-protocol member; ends when the consumer closes or
/// is dropped, or on a fatal error (kept for `recv` to return).
pub(super) async fn heartbeat_loop(inner: Weak<Inner>) {
    let Some(wake) = inner.upgrade().map(|i| i.hb_wake.clone()) else {
        return;
    };
    let mut next = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = wake.notified() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(group) = &inner.group else { return };
        let cfg = &inner.config;
        let retry = inner.client.config().retry_backoff;
        // max.poll.interval.ms: a member whose application stopped calling recv leaves,
        // as in the Java client; the next recv drops its partitions and rejoins.
        let since_poll = inner
            .last_poll
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        let epoch = inner.lock().kip848.epoch;
        if since_poll > cfg.max_poll_interval && epoch > 0 {
            warn!(
                group = group.group_id(),
                waited_ms = since_poll.as_millis() as u64,
                "max.poll.interval.ms exceeded: leaving the group; the next recv rejoins"
            );
            let me = Consumer {
                inner: inner.clone(),
            };
            me.leave_848().await;
            let mut st = inner.lock();
            st.kip848.lost = true;
            st.membership = None;
            st.rejoin = true;
            drop(st);
            inner.ready.notify_waiters();
            next = Instant::now() + retry;
            continue;
        }
        let (beat, subscription_version, owned_version) = {
            let st = inner.lock();
            let k = &st.kip848;
            if k.lost || st.mode != super::Mode::Subscribed {
                // Partitions to drop first (the next recv does, and wakes this loop),
                // or nothing subscribed (subscribe wakes it).
                next = Instant::now() + cfg.max_poll_interval;
                continue;
            }
            let joining = k.epoch == JOIN_EPOCH;
            let subscription =
                (joining || k.subscription_sent != k.subscription_version).then(|| {
                    match &k.pattern {
                        Some(p) => Subscription::Pattern(p.clone()),
                        None => Subscription::Topics(st.topics.clone()),
                    }
                });
            let owned = if joining {
                // A (re)joining member owns nothing, as far as the coordinator knows.
                Some(TopicIdPartitions::new())
            } else {
                (k.owned_sent != k.owned_version).then(|| k.owned.clone())
            };
            (
                Beat {
                    member_id: k.member_id.clone(),
                    member_epoch: k.epoch,
                    rebalance_timeout: cfg.max_poll_interval,
                    subscription,
                    server_assignor: if joining {
                        cfg.remote_assignor.clone()
                    } else {
                        None
                    },
                    owned,
                },
                k.subscription_version,
                k.owned_version,
            )
        };
        match group.consumer_heartbeat(&beat).await {
            Ok(answer) => {
                let mut st = inner.lock();
                let k = &mut st.kip848;
                if k.lost || k.epoch != beat.member_epoch {
                    // Fenced or left meanwhile: this answer is for a membership gone.
                    next = Instant::now();
                    continue;
                }
                if answer.member_epoch != k.epoch {
                    debug!(
                        member = %k.member_id,
                        from = k.epoch,
                        to = answer.member_epoch,
                        "member epoch"
                    );
                }
                k.epoch = answer.member_epoch;
                if beat.subscription.is_some() {
                    k.subscription_sent = subscription_version;
                }
                if beat.owned.is_some() && beat.member_epoch != JOIN_EPOCH {
                    k.owned_sent = owned_version;
                }
                if beat.member_epoch == JOIN_EPOCH {
                    // Joined, owning nothing as far as the coordinator knows (and in
                    // fact: partitions are dropped before rejoining).
                    if k.owned.is_empty() {
                        k.owned_sent = k.owned_version;
                    }
                    info!(group = group.group_id(), member = %k.member_id, epoch = k.epoch, "joined the group");
                }
                if let Some(a) = answer.assignment {
                    k.target = Some(a);
                }
                let interval = answer.heartbeat_interval;
                if interval > Duration::ZERO {
                    k.interval = Some(interval);
                }
                k.answered += 1;
                // Something left to say (owned partitions reconciled meanwhile, a new
                // subscription): at once; else at the coordinator's interval.
                let pending = k.owned_sent != k.owned_version
                    || k.subscription_sent != k.subscription_version;
                next = if pending {
                    Instant::now()
                } else {
                    Instant::now() + k.interval.unwrap_or(retry)
                };
                st.membership = st.kip848.membership();
                flag_reconcile(&mut st);
                let reconcile = st.rejoin;
                drop(st);
                inner.hb_answered.notify_waiters();
                if reconcile {
                    inner.ready.notify_waiters();
                }
            }
            Err(e) if is_fenced(&e) => {
                warn!(group = group.group_id(), error = %e, "fenced: dropping the partitions and rejoining");
                let mut st = inner.lock();
                st.kip848.epoch = JOIN_EPOCH;
                st.kip848.lost = true;
                st.membership = None;
                st.rejoin = true;
                drop(st);
                inner.hb_answered.notify_waiters();
                inner.ready.notify_waiters();
                next = Instant::now();
            }
            Err(e) if is_fatal(&e) => {
                warn!(group = group.group_id(), error = %e, "group membership failed");
                let mut st = inner.lock();
                st.fatal = Some(e);
                st.membership = None;
                st.heartbeat = false;
                drop(st);
                inner.hb_answered.notify_waiters();
                inner.ready.notify_waiters();
                return;
            }
            Err(e) => {
                // The coordinator moved or is loading, a lost connection, a timeout:
                // again after the backoff (the coordinator is looked up again).
                debug!(group = group.group_id(), error = %e, "consumer group heartbeat failed");
                next = Instant::now() + retry;
            }
        }
    }
}

/// Spawns the heartbeat loop of a consumer-protocol member.
pub(super) fn spawn_heartbeat(inner: &Arc<Inner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(heartbeat_loop(Arc::downgrade(inner)))
}
