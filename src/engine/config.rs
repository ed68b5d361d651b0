//! The engine's settings.

use crate::config::invalid;
use crate::error::ConfigError;

/// The engine's settings. The first seven have the names and defaults of the original
/// Paperboy's parameters.
///
/// ```
/// use paperboy::engine::EngineConfig;
///
/// let config = EngineConfig {
///     with_bulk_mode: true,
///     bulk_mode_threshold: Some(5_000),
///     max_retries: 3,
///     dead_letter_topic: Some("{topic}.dlq".into()),
///     ..EngineConfig::default()
/// };
/// assert!(config.with_commit);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Commit offsets of handled records. Default: `true`.
    pub with_commit: bool,
    /// Stop the engine when a record (or batch) fails for good; otherwise log it and
    /// skip it. Default: `true`. A `dead_letter_topic` takes precedence: failed records
    /// go there and the engine goes on.
    pub fail_on_exception: bool,
    /// Use bulk mode while a partition's backlog is above `bulk_mode_threshold`.
    /// Default: `false` (every record handled alone).
    pub with_bulk_mode: bool,
    /// In bulk mode, how long to wait for a batch to fill. Default: 10000.
    pub bulk_mode_timeout_ms: u64,
    /// In bulk mode, the most records in one batch. Default: 10000.
    pub bulk_mode_max_records: usize,
    /// Backlog (records) above which a partition is in bulk mode; `None` stays in bulk
    /// mode. Default: `Some(1000)`.
    pub bulk_mode_threshold: Option<i64>,
    /// In single mode, how often handled offsets are committed. Default: 10000.
    pub commit_interval_ms: u64,
    /// How many times a failing record (or batch) is tried again. Default: 0.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each next one. Default: 100.
    pub retry_backoff_ms: u64,
    /// The longest wait between retries. Default: 10000.
    pub retry_backoff_max_ms: u64,
    /// Where records that failed their last attempt go, instead of stopping the engine
    /// or being skipped; `{topic}` is replaced by the record's topic. Default: `None`.
    pub dead_letter_topic: Option<String>,
    /// How many partitions are handled at once. Default: 16.
    pub max_concurrency: usize,
    /// Records of one partition received and not yet handled above which the partition
    /// is paused (fetching resumes below half of it). Default: `2 * bulk_mode_max_records`
    /// with bulk mode, else 1000.
    pub max_pending_records: Option<usize>,
    /// How long a stop (or a revocation) waits for handlers to finish the records they
    /// are on; records still unfinished then are not committed. Default: 30000.
    pub shutdown_timeout_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            with_commit: true,
            fail_on_exception: true,
            with_bulk_mode: false,
            bulk_mode_timeout_ms: 10_000,
            bulk_mode_max_records: 10_000,
            bulk_mode_threshold: Some(1000),
            commit_interval_ms: 10_000,
            max_retries: 0,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 10_000,
            dead_letter_topic: None,
            max_concurrency: 16,
            max_pending_records: None,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl EngineConfig {
    pub(super) fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.bulk_mode_max_records == 0 {
            return Err(invalid("bulk_mode_max_records", "0", "at least 1"));
        }
        if self.bulk_mode_timeout_ms == 0 {
            return Err(invalid("bulk_mode_timeout_ms", "0", "at least 1"));
        }
        if self.commit_interval_ms == 0 {
            return Err(invalid("commit_interval_ms", "0", "at least 1"));
        }
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "0", "at least 1"));
        }
        if self.max_pending_records == Some(0) {
            return Err(invalid("max_pending_records", "0", "at least 1"));
        }
        if let Some(t) = &self.dead_letter_topic {
            if t.is_empty() {
                return Err(invalid("dead_letter_topic", "", "a topic name"));
            }
        }
        Ok(())
    }

    pub(super) fn max_pending(&self) -> usize {
        self.max_pending_records.unwrap_or(if self.with_bulk_mode {
            self.bulk_mode_max_records.saturating_mul(2)
        } else {
            1000
        })
    }
}
