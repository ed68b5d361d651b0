//! Offsets: where partitions start (committed offsets, `auto.offset.reset`), commits
//! (explicit, of consumed records, automatic) and the group metadata a transactional
//! producer commits for.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    pub(super) fn auto_commit_due(&self) -> Option<Instant> {
        let c = &self.inner.config;
        (c.auto_commit && self.inner.group.is_some())
            .then(|| self.inner.lock().last_commit + c.auto_commit_interval)
    }

    /// Sets the position of every partition that has none: the committed offset, or
    /// `auto.offset.reset`.
    pub(super) async fn init_positions(&self) -> Result<()> {
        let todo: Vec<TopicPartition> = {
            let st = self.inner.lock();
            st.parts
                .iter()
                .filter(|(_, p)| p.position.is_none() && p.error.is_none())
                .map(|(tp, _)| tp.clone())
                .collect()
        };
        if todo.is_empty() {
            return Ok(());
        }
        let committed = match &self.inner.group {
            Some(g) if self.consumer_protocol() && self.inner.lock().mode == Mode::Subscribed => {
                // With the member id and epoch; a stale epoch is retried next time.
                let todo = &todo;
                match self
                    .retry_stale_epoch(|m| async move { g.committed(todo, m.as_ref()).await })
                    .await
                {
                    Ok(c) => c,
                    Err(e) if e.kafka_code() == Some(KafkaCode::StaleMemberEpoch) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            Some(g) => g.committed(&todo, None).await?,
            None => HashMap::new(),
        };
        for tp in todo {
            let (offset, epoch) = match committed.get(&tp).copied().flatten() {
                Some((o, e)) => (Ok(o), e),
                None => (self.reset_offset(&tp).await, -1),
            };
            let mut st = self.inner.lock();
            if let Some(p) = st.parts.get_mut(&tp) {
                if p.position.is_none() {
                    match offset {
                        Ok(o) => {
                            debug!(partition = %tp, offset = o, epoch, "starting position");
                            st.seek_part(&tp, o);
                            if let Some(p) = st.parts.get_mut(&tp) {
                                // A committed offset with its epoch is checked against
                                // the leader's log before fetching (KIP-320).
                                p.position_epoch = epoch;
                                p.validate = (epoch >= 0).then_some(epoch);
                            }
                        }
                        Err(e) if e.is_retriable() || e.is_stale_metadata() => {
                            // E.g. a new topic whose leader is not elected yet: the
                            // next recv tries again.
                            debug!(partition = %tp, error = %e, "position lookup will be retried");
                        }
                        Err(e) => p.error = Some(e),
                    }
                }
            }
        }
        self.inner.fetch_wake.notify_one();
        Ok(())
    }

    pub(super) async fn reset_offset(&self, tp: &TopicPartition) -> Result<i64> {
        let spec = match self.inner.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::Error => {
                return Err(Error::NoOffset(tp.to_string()));
            }
        };
        self.inner
            .client
            .list_offset(&tp.topic, tp.partition, spec)
            .await
    }

    pub(super) fn consumed_offsets(
        &self,
        only: Option<&[TopicPartition]>,
    ) -> BTreeMap<TopicPartition, (i64, i32)> {
        let st = self.inner.lock();
        st.parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| Some((tp.clone(), st.handed_position(tp, p)?)))
            .collect()
    }

    /// Commits the position of every assigned partition (the offset after the last
    /// record handed out).
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn commit_consumed(&self) -> Result<()> {
        let offsets = self.consumed_offsets(None);
        self.commit_offsets(offsets).await
    }

    /// Commits, per partition, the offset after the last of `records`: what a
    /// consumer restarting should read next.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn commit_records(&self, records: &[ConsumerRecord]) -> Result<()> {
        let mut offsets: BTreeMap<TopicPartition, (i64, i32)> = BTreeMap::new();
        for r in records {
            let e = offsets
                .entry(r.topic_partition())
                .or_insert((r.offset + 1, r.leader_epoch));
            if r.offset + 1 > e.0 {
                *e = (r.offset + 1, r.leader_epoch);
            }
        }
        self.commit_offsets(offsets).await
    }

    /// Commits `offsets`: for each partition, the next offset to read.
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`; [`Error::NotAssigned`] when a partition is
    /// not assigned to this member (it was revoked); the coordinator's errors, e.g.
    /// REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION as [`Error::Kafka`].
    pub async fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let map = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), (*o, -1)))
            .collect();
        self.commit_offsets(map).await
    }

    pub(super) async fn commit_offsets(
        &self,
        offsets: BTreeMap<TopicPartition, (i64, i32)>,
    ) -> Result<()> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id, to commit").into());
        };
        // Nothing to commit (an empty batch): no request, whatever the group is doing.
        if offsets.is_empty() {
            return Ok(());
        }
        let membership = {
            let st = self.inner.lock();
            let missing: Vec<String> = offsets
                .keys()
                .filter(|tp| !st.parts.contains_key(*tp))
                .map(|tp| tp.to_string())
                .collect();
            if !missing.is_empty() && st.mode == Mode::Subscribed {
                return Err(Error::NotAssigned(missing.join(", ")));
            }
            match st.mode {
                Mode::Subscribed => Some(st.membership.clone().ok_or_else(|| {
                    Error::from_code(27, None, || format!("commit to group {}", group.group_id()))
                        .expect("27 is an error")
                })?),
                _ => None,
            }
        };
        debug!(?offsets, "committing");
        if self.consumer_protocol() && membership.is_some() {
            // The coordinator checks the member epoch: a stale one (it moved on since
            // this commit was made) is retried after the next heartbeat.
            let offsets = &offsets;
            return self
                .retry_stale_epoch(|m| async move {
                    let m = m.ok_or_else(|| {
                        Error::from_code(27, None, || {
                            format!("commit to group {}", group.group_id())
                        })
                        .expect("27 is an error")
                    })?;
                    group.commit(Some(&m), offsets).await
                })
                .await;
        }
        group.commit(membership.as_ref(), &offsets).await
    }

    /// This consumer's place in its group, for a transactional producer's
    /// [`send_offsets_to_transaction`](crate::Producer::send_offsets_to_transaction):
    /// the coordinator refuses offsets sent with it once the consumer is no longer the
    /// member it names (it lost its partitions in a rebalance).
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`.
    pub fn group_metadata(&self) -> Result<ConsumerGroupMetadata> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id").into());
        };
        let membership = self.inner.lock().membership.clone();
        Ok(ConsumerGroupMetadata {
            group_id: group.group_id().to_owned(),
            member_id: membership
                .as_ref()
                .map(|m| m.member_id.clone())
                .unwrap_or_default(),
            generation_id: membership.as_ref().map_or(-1, |m| m.generation),
            group_instance_id: self.inner.config.group_instance_id.clone(),
        })
    }

    /// The committed offsets of `partitions` in this consumer's group.
    ///
    /// # Errors
    /// [`Error::Config`] without a `group.id`; the coordinator's errors.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
        let Some(group) = &self.inner.group else {
            return Err(crate::config::invalid("group.id", "", "a group id").into());
        };
        Ok(group
            .committed(partitions, None)
            .await?
            .into_iter()
            .map(|(tp, o)| (tp, o.map(|(o, _)| o)))
            .collect())
    }
}
