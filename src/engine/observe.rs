//! What the engine lets an operator see: events for a metrics hook of your choice,
//! counters, and a liveness signal.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::EngineError;
use crate::consumer::TopicPartition;

/// How a partition's records are handed to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// One record per handling call; offsets committed every `commit_interval_ms`.
    Single,
    /// A batch of the partition's records per handling call; committed after the batch.
    Bulk,
}

/// Something the engine did, for a metrics or logging hook (see [`Observer`]). Every
/// event is also logged with `tracing`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A partition's mode was set (when its first records arrive) or changed. `lag` is
    /// the backlog that decided it: the high watermark minus the offset of the next
    /// record to handle.
    Mode {
        /// The partition.
        partition: TopicPartition,
        /// The mode it is in from now on.
        mode: Mode,
        /// The backlog, in records.
        lag: i64,
    },
    /// A handling call succeeded (or its error was swallowed by the error hook).
    Handled {
        /// The partition.
        partition: TopicPartition,
        /// The first offset handled.
        offset: i64,
        /// How many records (1 in single mode).
        records: usize,
        /// The mode of the call.
        mode: Mode,
        /// How long the call took, retries included.
        elapsed: Duration,
    },
    /// A handling call failed and will be tried again after `backoff`.
    Retrying {
        /// The partition.
        partition: TopicPartition,
        /// The first offset of the call.
        offset: i64,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// The wait before the next attempt.
        backoff: Duration,
        /// Why it failed.
        error: EngineError,
    },
    /// A record was written to the dead-letter topic after its last attempt failed.
    DeadLettered {
        /// The partition it was read from.
        partition: TopicPartition,
        /// Its offset.
        offset: i64,
        /// The dead-letter topic.
        topic: String,
        /// Why it failed.
        error: EngineError,
    },
    /// A handling call failed for good. With `fail_on_exception` the engine stops;
    /// otherwise its records are skipped.
    Failed {
        /// The partition.
        partition: TopicPartition,
        /// The first offset of the call.
        offset: i64,
        /// How many records.
        records: usize,
        /// Why.
        error: EngineError,
    },
    /// Offsets were committed: for each partition, the next offset to read.
    Committed {
        /// What was committed.
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// Partitions were taken away in a rebalance, after their finished work was
    /// committed.
    Revoked {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
}

/// A hook that sees every [`Event`]: count, time and export them to the metrics
/// backend of your choice. Called inline on the engine's tasks: keep it quick.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use paperboy::engine::{Event, Observer};
///
/// #[derive(Default)]
/// struct Counts {
///     handled: AtomicU64,
/// }
///
/// impl Observer for Counts {
///     fn on_event(&self, event: &Event) {
///         if let Event::Handled { records, .. } = event {
///             self.handled.fetch_add(*records as u64, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// Called for every event.
    fn on_event(&self, event: &Event);
}

/// Counters since the engine started, from [`Health::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records handled (successfully, or with a swallowed error).
    pub processed: u64,
    /// Handling calls that failed for good (their records skipped, dead-lettered, or the
    /// engine stopped).
    pub failed: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    /// Records written to the dead-letter topic.
    pub dead_lettered: u64,
    /// Successful commits.
    pub commits: u64,
    /// Each partition this engine has handled records of: its current mode and backlog.
    pub partitions: BTreeMap<TopicPartition, (Mode, i64)>,
}

/// The engine's liveness and counters, for a health endpoint. Cheap to clone; see
/// [`Engine::health`](super::Engine::health).
#[derive(Debug, Clone)]
pub struct Health {
    pub(crate) inner: Arc<HealthInner>,
}

/// A partition worker's busy slot; see [`Health::busy_slot`].
#[derive(Clone, Default, Debug)]
pub(crate) struct BusySlot(Arc<AtomicU64>);

#[derive(Debug)]
pub(crate) struct HealthInner {
    started: Instant,
    /// Milliseconds after `started` of the last successful poll / commit, plus one (0:
    /// never).
    last_poll: AtomicU64,
    last_commit: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) partitions: Mutex<BTreeMap<TopicPartition, (Mode, i64)>>,
    /// Each partition worker's slot: when its handling call in progress started, in
    /// milliseconds after `started`, plus one (0: idle), as of the last poll. Written by
    /// the worker without a lock.
    busy: Mutex<HashMap<TopicPartition, BusySlot>>,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            inner: Arc::new(HealthInner {
                started: Instant::now(),
                last_poll: AtomicU64::new(0),
                last_commit: AtomicU64::new(0),
                processed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                commits: AtomicU64::new(0),
                partitions: Mutex::new(BTreeMap::new()),
                busy: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn stamp(&self, at: &AtomicU64) {
        let ms = self.inner.started.elapsed().as_millis() as u64 + 1;
        at.store(ms, Ordering::Relaxed);
    }

    fn read(&self, at: &AtomicU64) -> Option<Instant> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.inner.started + Duration::from_millis(ms - 1)),
        }
    }

    pub(crate) fn polled(&self) {
        self.stamp(&self.inner.last_poll);
    }

    pub(crate) fn committed(&self) {
        self.stamp(&self.inner.last_commit);
        self.inner.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// The busy slot of the worker of `tp`, which it sets around each handling call.
    pub(crate) fn busy_slot(&self, tp: &TopicPartition) -> BusySlot {
        let slot = BusySlot::default();
        self.inner
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tp.clone(), slot.clone());
        slot
    }

    /// A handling call started (`true`: at the engine's last poll, a clock read at most
    /// one poll old) or ended.
    pub(crate) fn set_busy(&self, slot: &BusySlot, busy: bool) {
        let v = if busy {
            self.inner.last_poll.load(Ordering::Relaxed).max(1)
        } else {
            0
        };
        slot.0.store(v, Ordering::Relaxed);
    }

    /// The worker of `tp` ended: its slot goes (unless a new worker took its place).
    pub(crate) fn forget_busy(&self, tp: &TopicPartition, slot: &BusySlot) {
        let mut busy = self.inner.busy.lock().unwrap_or_else(|e| e.into_inner());
        if busy.get(tp).is_some_and(|s| Arc::ptr_eq(&s.0, &slot.0)) {
            busy.remove(tp);
        }
    }

    /// How long the longest handling call in progress has been running (retries
    /// included), or `None` when no handler is running. The engine keeps polling (and
    /// so stays in its group) while a handler hangs: a liveness probe should ask this
    /// too.
    pub fn longest_running(&self) -> Option<Duration> {
        let busy = self.inner.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.values()
            .filter_map(|s| match s.0.load(Ordering::Relaxed) {
                0 => None,
                n => Some(self.inner.started + Duration::from_millis(n - 1)),
            })
            .map(|t| t.elapsed())
            .max()
    }

    /// When the engine last polled the consumer successfully (`None`: not yet).
    pub fn last_poll(&self) -> Option<Instant> {
        self.read(&self.inner.last_poll)
    }

    /// When the engine last committed successfully (`None`: not yet).
    pub fn last_commit(&self) -> Option<Instant> {
        self.read(&self.inner.last_commit)
    }

    /// Whether the engine polled within `max_age`: what a liveness probe should ask. The
    /// engine polls at least every `bulk_mode_timeout_ms` (and far more often while
    /// records flow), whatever its handlers are doing.
    pub fn is_live(&self, max_age: Duration) -> bool {
        self.last_poll().is_some_and(|t| t.elapsed() <= max_age)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            processed: i.processed.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            retried: i.retried.load(Ordering::Relaxed),
            dead_lettered: i.dead_lettered.load(Ordering::Relaxed),
            commits: i.commits.load(Ordering::Relaxed),
            partitions: i
                .partitions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
