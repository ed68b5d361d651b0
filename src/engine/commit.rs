//! Commits: what the workers finished, on a timer and after each bulk batch, before a
//! revocation (the listener) and at the stop; and finishing partitions' workers.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use tracing::warn;

use super::{Event, Shared};
use crate::consumer::{BoxFuture, Consumer, RebalanceListener, TopicPartition};
use crate::error::Result;

impl Shared {
    /// Stops the workers of `partitions`: each finishes the records it is on (for up to
    /// `shutdown_timeout_ms`; then it is aborted and those records stay unfinished),
    /// and what it has not started is dropped.
    pub(super) async fn finish_partitions(&self, partitions: &[TopicPartition]) {
        let mut tasks = Vec::new();
        {
            let mut parts = self.lock();
            for tp in partitions {
                if let Some(p) = parts.get_mut(tp) {
                    p.cancel.store(true, Ordering::Release);
                    p.tx = None;
                    p.forming.clear();
                    p.forming_since = None;
                    if let Some(t) = p.task.take() {
                        tasks.push((tp.clone(), t));
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        for (tp, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!(%tp, "a handler did not finish within shutdown_timeout: Duration::from_millis(its) record is not committed");
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Commits the handled offsets of `only` (or of every partition) that moved since
    /// their last commit.
    pub(super) async fn commit_done(&self, only: Option<&[TopicPartition]>) -> Result<()> {
        if !self.config.commit {
            return Ok(());
        }
        let _turn = self.commit_lock.lock().await;
        // Exactly-once: one transaction holds every partition's output, so it commits
        // every partition's offsets, with no unit being handled meanwhile.
        let gate = match &self.eos {
            Some(eos) => Some(eos.exclusive().await),
            None => None,
        };
        let only = if self.eos.is_some() { None } else { only };
        if self.eos.as_ref().is_some_and(|e| e.rewind_pending()) {
            return Ok(());
        }
        let offsets: Vec<(TopicPartition, i64)> = self
            .lock()
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let done = p.done?;
                (p.committed != Some(done)).then(|| (tp.clone(), done))
            })
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        match &self.eos {
            Some(eos) => {
                let group = self.consumer.group_metadata()?;
                eos.commit(&offsets, &group).await?;
                for (tp, o) in &offsets {
                    eos.forget_before(tp, *o);
                }
            }
            None => self.consumer.commit(&offsets).await?,
        }
        drop(gate);
        {
            let mut parts = self.lock();
            for (tp, o) in &offsets {
                if let Some(p) = parts.get_mut(tp) {
                    p.committed = Some(*o);
                }
            }
        }
        self.health.committed();
        self.emit(Event::Committed { offsets });
        Ok(())
    }
}

/// Commits after each bulk batch and every `commit_interval_ms`.
pub(super) async fn committer(shared: Weak<Shared>) {
    let Some(s) = shared.upgrade() else { return };
    let interval = s.config.commit_interval;
    drop(s);
    loop {
        let Some(s) = shared.upgrade() else { return };
        tokio::select! {
            _ = s.commit_wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = s.commit_done(None).await {
            warn!(error = %e, "commit failed; handled offsets are committed again later");
        }
    }
}

/// Before partitions are revoked: their workers finish what they are on, and what was
/// handled is committed while this member still owns them.
pub(super) struct Listener(pub(super) Weak<Shared>);

impl RebalanceListener for Listener {
    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(shared) = self.0.upgrade() else {
                return;
            };
            shared.finish_partitions(partitions).await;
            if let Err(e) = shared.commit_done(Some(partitions)).await {
                warn!(error = %e, ?partitions, "commit before revocation failed; their new owners handle those records again");
            }
            {
                let mut parts = shared.lock();
                for tp in partitions {
                    parts.remove(tp);
                }
            }
            shared.emit(Event::Revoked {
                partitions: partitions.to_vec(),
            });
        })
    }
}
