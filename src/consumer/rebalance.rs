//! Group membership from the consumer's side: starting and running rebalances (the
//! classic JoinGroup/SyncGroup round, the leader's assignment), revoking partitions
//! through the listener, and the heartbeats.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    pub(super) fn rebalance_pending(&self) -> bool {
        self.group_due(&self.inner.lock())
    }

    /// Whether the group needs this member's attention before records are handed out:
    /// classic, a (re)join; consumer protocol, a reconciliation (the heartbeat loop
    /// joins on its own).
    pub(super) fn group_due(&self, st: &State) -> bool {
        st.mode == Mode::Subscribed
            && (st.rejoin || (!self.consumer_protocol() && st.membership.is_none()))
    }

    /// Runs what is due before records are handed out: a rebalance, position lookups,
    /// an auto-commit.
    pub(super) async fn maintain(&self) -> Result<()> {
        let (rejoin, fatal, need_positions) = {
            let st = self.inner.lock();
            (
                self.group_due(&st),
                st.fatal.clone(),
                st.parts.values().any(|p| p.position.is_none()),
            )
        };
        if let Some(e) = fatal {
            return Err(e);
        }
        if rejoin {
            self.start_rebalance()?;
            if self.inner.lock().rebalancing {
                // The caller waits on `ready`, which the task notifies when done.
                return Ok(());
            }
        }
        if need_positions {
            self.init_positions().await?;
        }
        if self.auto_commit_due().is_some_and(|t| Instant::now() >= t) {
            // In a task of its own: a `recv` dropped while a commit is in flight neither
            // cancels it nor starts it again at once (which, with callers that cancel
            // often, could keep every call busy committing and none handing out).
            self.inner.lock().last_commit = Instant::now();
            let offsets = self.consumed_offsets(None);
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.commit_offsets(offsets).await {
                    warn!(error = %e, "auto-commit failed");
                }
            });
        }
        Ok(())
    }

    pub(super) fn listener(&self) -> Option<Arc<dyn RebalanceListener>> {
        self.inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Gives up `partitions`: the listener first (it may commit), then auto-commit,
    /// then they are dropped with their buffered records.
    pub(super) async fn revoke(&self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        info!(?partitions, "revoking partitions");
        if let Some(l) = self.listener() {
            l.on_revoked(self, partitions).await;
        }
        if self.inner.config.auto_commit {
            let offsets = self.consumed_offsets(Some(partitions));
            if let Err(e) = self.commit_offsets(offsets).await {
                warn!(error = %e, "auto-commit before revoking failed");
            }
        }
        let mut st = self.inner.lock();
        for tp in partitions {
            st.remove_part(tp);
        }
        drop(st);
        self.inner.fetch_wake.notify_one();
    }

    /// Starts a rebalance in a task of its own unless one is running; returns how the
    /// last one failed, once, instead of starting another at once.
    pub(super) fn start_rebalance(&self) -> Result<()> {
        let mut slot = self
            .inner
            .rebalance_task
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        {
            let mut st = self.inner.lock();
            if st.rebalancing {
                return Ok(());
            }
            if let Some(e) = st.rebalance_error.take() {
                return Err(e);
            }
            st.rebalancing = true;
        }
        let me = self.clone();
        *slot = Some(tokio::spawn(async move {
            let result = me.rebalance().await;
            {
                let mut st = me.inner.lock();
                st.rebalancing = false;
                st.rebalance_error = result.err();
            }
            me.inner.ready.notify_waiters();
        }));
        Ok(())
    }

    pub(super) async fn rebalance(&self) -> Result<()> {
        let Ok(_guard) = self.inner.rebalance.try_lock() else {
            // Another task (or a listener, from inside this rebalance) is already at it:
            // carry on with what is buffered; waiting here could wait on ourselves.
            return Ok(());
        };
        if self.consumer_protocol() {
            return self.reconcile_848().await;
        }
        let group = self
            .inner
            .group
            .as_ref()
            .expect("subscribe checked group.id");
        let cfg = &self.inner.config;
        let cooperative = cfg.cooperative();
        loop {
            let (topics, owned, mut member_id, generation) = {
                let mut st = self.inner.lock();
                if st.mode != Mode::Subscribed || !(st.rejoin || st.membership.is_none()) {
                    return Ok(());
                }
                st.rejoin = false;
                let owned: Vec<TopicPartition> = st.parts.keys().cloned().collect();
                (
                    st.topics.clone(),
                    owned,
                    st.member_id.clone(),
                    st.membership.as_ref().map_or(-1, |m| m.generation),
                )
            };
            let owned = if cooperative {
                owned
            } else {
                self.revoke(&owned).await;
                self.inner.lock().membership = None;
                Vec::new()
            };
            let subscription = assignor::Subscription {
                topics: topics.clone(),
                user_data: None,
                owned_partitions: owned.clone(),
                generation_id: generation,
                rack_id: None,
            };
            let protocols: Vec<(&'static str, Bytes)> = cfg
                .strategies
                .iter()
                .map(|s| {
                    (
                        s.protocol_name(),
                        assignor::encode_subscription(
                            &subscription,
                            assignor::SUBSCRIPTION_VERSION,
                        ),
                    )
                })
                .collect();
            let joined = group
                .join(
                    &mut member_id,
                    &protocols,
                    cfg.session_timeout,
                    cfg.max_poll_interval,
                )
                .await;
            let joined = match joined {
                Ok(j) => j,
                Err(e) => {
                    let mut st = self.inner.lock();
                    st.member_id = member_id;
                    st.rejoin = true;
                    if e.kafka_code() == Some(KafkaCode::FencedInstanceId) {
                        st.fatal = Some(e.clone());
                    }
                    return Err(e);
                }
            };
            let membership = Membership {
                member_id: joined.member_id.clone(),
                generation: joined.generation,
            };
            self.inner.lock().member_id = joined.member_id.clone();
            let leader = joined.leader == joined.member_id;
            let (assignments, assigned_from) = if leader {
                match self.assign_as_leader(&joined).await {
                    Ok((a, from)) => (a, Some(from)),
                    Err(e) => {
                        self.inner.lock().rejoin = true;
                        return Err(e);
                    }
                }
            } else {
                (Vec::new(), None)
            };
            let synced = group
                .sync(&membership, joined.protocol.as_deref(), assignments)
                .await;
            let bytes = match synced {
                Ok(b) => b,
                Err(e) => match e.kafka_code() {
                    Some(KafkaCode::RebalanceInProgress) => {
                        self.inner.lock().rejoin = true;
                        continue;
                    }
                    Some(KafkaCode::UnknownMemberId | KafkaCode::IllegalGeneration) => {
                        let mut st = self.inner.lock();
                        if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                            st.member_id.clear();
                        }
                        st.membership = None;
                        st.rejoin = true;
                        continue;
                    }
                    _ => {
                        self.inner.lock().rejoin = true;
                        return Err(e);
                    }
                },
            };
            let assigned: BTreeSet<TopicPartition> = assignor::decode_assignment(&bytes)
                .map_err(|e| Error::IncompleteResponse(format!("group assignment: {e}")))?
                .into_iter()
                .collect();
            info!(
                group = group.group_id(),
                generation = joined.generation,
                member = %joined.member_id,
                leader,
                protocol = ?joined.protocol,
                partitions = assigned.len(),
                "joined group"
            );
            let owned: BTreeSet<TopicPartition> = owned.into_iter().collect();
            let revoked: Vec<_> = owned.difference(&assigned).cloned().collect();
            let added: Vec<_> = assigned.difference(&owned).cloned().collect();
            {
                let mut st = self.inner.lock();
                st.membership = Some(membership);
                st.leader = leader;
                st.assigned_from = assigned_from;
            }
            if !revoked.is_empty() {
                // Cooperative: give these up, then rejoin so they can move.
                self.revoke(&revoked).await;
                self.inner.lock().rejoin = true;
            }
            {
                let mut st = self.inner.lock();
                for tp in &added {
                    st.parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(tp));
                }
            }
            self.ensure_heartbeat();
            if !added.is_empty() {
                if let Some(l) = self.listener() {
                    l.on_assigned(self, &added).await;
                }
            }
            self.inner.fetch_wake.notify_one();
            let again = self.inner.lock().rejoin;
            if !again {
                return Ok(());
            }
        }
    }

    pub(super) async fn assign_as_leader(
        &self,
        joined: &group::Joined,
    ) -> Result<(Vec<(String, Bytes)>, BTreeMap<String, i32>)> {
        let strategy = joined
            .protocol
            .as_deref()
            .and_then(AssignmentStrategy::parse)
            .ok_or_else(|| {
                Error::IncompleteResponse(format!(
                    "the group chose assignor {:?}, which this consumer does not offer",
                    joined.protocol
                ))
            })?;
        let mut members = Vec::new();
        let mut topics = BTreeSet::new();
        for (member_id, instance, meta) in &joined.members {
            let subscription = assignor::decode_subscription(meta).map_err(|e| {
                Error::IncompleteResponse(format!("subscription of member {member_id}: {e}"))
            })?;
            topics.extend(subscription.topics.iter().cloned());
            members.push(assignor::Member {
                member_id: member_id.clone(),
                group_instance_id: instance.clone(),
                subscription,
            });
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let cluster = self.inner.client.refresh_metadata(&names).await?;
        let counts = partition_counts(&cluster, &names);
        let plan = assignor::assign(strategy, &members, &counts);
        debug!(?plan, "assignment computed as leader");
        Ok((
            plan.into_iter()
                .map(|(m, parts)| (m, assignor::encode_assignment(&parts, None)))
                .collect(),
            counts,
        ))
    }

    pub(super) fn ensure_heartbeat(&self) {
        let mut st = self.inner.lock();
        if st.heartbeat {
            return;
        }
        st.heartbeat = true;
        drop(st);
        let task = if self.consumer_protocol() {
            membership::spawn_heartbeat(&self.inner)
        } else {
            tokio::spawn(heartbeat_loop(Arc::downgrade(&self.inner)))
        };
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }
}

pub(super) async fn heartbeat_loop(inner: std::sync::Weak<Inner>) {
    let mut last_ok = Instant::now();
    loop {
        let interval = match inner.upgrade() {
            Some(i) => i.config.heartbeat_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(group) = &inner.group else { return };
        let membership = {
            let st = inner.lock();
            if st.rejoin {
                None
            } else {
                st.membership.clone()
            }
        };
        let Some(m) = membership else {
            last_ok = Instant::now();
            continue;
        };
        let since_poll = inner
            .last_poll
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if since_poll > inner.config.max_poll_interval {
            warn!(
                group = group.group_id(),
                waited_ms = since_poll.as_millis() as u64,
                "max.poll.interval.ms exceeded: leaving the group; the next recv rejoins"
            );
            if inner.config.group_instance_id.is_none() {
                group
                    .leave(&m.member_id, "max.poll.interval.ms exceeded")
                    .await;
            }
            let mut st = inner.lock();
            st.membership = None;
            st.member_id.clear();
            st.rejoin = true;
            continue;
        }
        match group.heartbeat(&m).await {
            Ok(()) => last_ok = Instant::now(),
            Err(e) => {
                let mut st = inner.lock();
                let same = st.membership.as_ref() == Some(&m);
                // This member's own rebalance is under way (its listener, JoinGroup or
                // SyncGroup). A cooperative member keeps its generation while it rejoins
                // and heartbeats with it meanwhile (so does an eager one while its
                // listener runs); the coordinator answers REBALANCE_IN_PROGRESS, or
                // ILLEGAL_GENERATION once the new generation is formed. That rebalance is
                // the one being asked for: flagging another rejoin made every rebalance
                // start the next, every heartbeat interval, and a cooperative group never
                // settled. Should the group need yet another, the first heartbeat of the
                // new generation says so.
                let rejoining = st.rebalancing;
                match e.kafka_code() {
                    Some(KafkaCode::RebalanceInProgress) => {
                        last_ok = Instant::now();
                        if same && !rejoining {
                            debug!(group = group.group_id(), "rebalance in progress: rejoining");
                            st.rejoin = true;
                        }
                    }
                    Some(KafkaCode::IllegalGeneration) if rejoining || !same => {
                        debug!(
                            group = group.group_id(),
                            "heartbeat of the generation being left"
                        );
                        last_ok = Instant::now();
                    }
                    Some(KafkaCode::IllegalGeneration | KafkaCode::UnknownMemberId) if same => {
                        warn!(group = group.group_id(), error = %e, "membership lost: rejoining");
                        if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                            st.member_id.clear();
                        }
                        st.membership = None;
                        st.rejoin = true;
                    }
                    Some(KafkaCode::FencedInstanceId) => {
                        st.fatal = Some(e);
                    }
                    _ => {
                        debug!(group = group.group_id(), error = %e, "heartbeat failed");
                        if last_ok.elapsed() > inner.config.session_timeout {
                            warn!(
                                group = group.group_id(),
                                "no heartbeat got through within the session timeout: rejoining"
                            );
                            st.membership = None;
                            st.rejoin = true;
                        }
                    }
                }
                drop(st);
                inner.ready.notify_waiters();
            }
        }
        // The leader watches for new topics or partitions to assign.
        let check = {
            let st = inner.lock();
            st.leader
                .then(|| (st.topics.clone(), st.assigned_from.clone()))
        };
        if let Some((topics, Some(from))) = check {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Ok(cluster) = inner.client.refresh_metadata(&names).await {
                let now = partition_counts(&cluster, &names);
                if now != from {
                    info!(
                        group = group.group_id(),
                        "subscribed topics changed: rebalancing"
                    );
                    inner.lock().rejoin = true;
                    inner.ready.notify_waiters();
                }
            }
        }
    }
}

/// The partition count of each of `topics` the metadata knows with partitions: what a
/// leader assigns, and what it compares to notice a topic grow.
fn partition_counts(cluster: &crate::metadata::Cluster, topics: &[&str]) -> BTreeMap<String, i32> {
    topics
        .iter()
        .filter_map(|t| {
            cluster
                .topic(t)
                .filter(|topic| !topic.partitions.is_empty())
                .map(|topic| (t.to_string(), topic.partitions.len() as i32))
        })
        .collect()
}
