//! The engine's settings.

use std::time::Duration;

use crate::config::{invalid, parse_bool, parse_ms, parse_num};
use crate::error::ConfigError;

/// The engine's settings: typed fields (times as [`Duration`]s) with defaults, or
/// properties by name ([`EngineConfig::from_properties`]), the names and defaults of the
/// original Paperboy's parameters (times in ms: `commit_interval_ms` is the field
/// `commit_interval`).
///
/// ```
/// use std::time::Duration;
/// use paperboy::engine::EngineConfig;
///
/// let config = EngineConfig {
///     with_bulk_mode: true,
///     bulk_mode_threshold: Some(5_000),
///     max_retries: 3,
///     dead_letter_topic: Some("{topic}.dlq".into()),
///     commit_interval: Duration::from_secs(5),
///     ..EngineConfig::default()
/// };
/// assert!(config.with_commit);
///
/// let same = EngineConfig::from_properties([
///     ("with_bulk_mode", "true"),
///     ("bulk_mode_threshold", "5000"),
///     ("max_retries", "3"),
///     ("dead_letter_topic", "{topic}.dlq"),
///     ("commit_interval_ms", "5000"),
/// ])?;
/// assert_eq!(same, config);
///
/// let err = EngineConfig::from_properties([("commit_interval", "5")]).unwrap_err();
/// assert_eq!(err.to_string(), "unknown configuration key `commit_interval`");
/// # Ok::<(), paperboy::ConfigError>(())
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
    /// In bulk mode, how long to wait for a batch to fill (`bulk_mode_timeout_ms`).
    /// Default: 10 s.
    pub bulk_mode_timeout: Duration,
    /// In bulk mode, the most records in one batch. Default: 10000.
    pub bulk_mode_max_records: usize,
    /// Backlog (records) above which a partition is in bulk mode; `None` stays in bulk
    /// mode. Default: `Some(1000)`.
    pub bulk_mode_threshold: Option<i64>,
    /// In single mode, how often handled offsets are committed (`commit_interval_ms`).
    /// Default: 10 s.
    pub commit_interval: Duration,
    /// How many times a failing record (or batch) is tried again. Default: 0.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each next one (`retry_backoff_ms`).
    /// Default: 100 ms.
    pub retry_backoff: Duration,
    /// The longest wait between retries (`retry_backoff_max_ms`). Default: 10 s.
    pub retry_backoff_max: Duration,
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
    /// are on; records still unfinished then are not committed (`shutdown_timeout_ms`).
    /// Default: 30 s.
    pub shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            with_commit: true,
            fail_on_exception: true,
            with_bulk_mode: false,
            bulk_mode_timeout: Duration::from_secs(10),
            bulk_mode_max_records: 10_000,
            bulk_mode_threshold: Some(1000),
            commit_interval: Duration::from_secs(10),
            max_retries: 0,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            dead_letter_topic: None,
            max_concurrency: 16,
            max_pending_records: None,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    /// Settings from properties by name, starting from the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unknown key or malformed value.
    pub fn from_properties<I, K, V>(props: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut c = EngineConfig::default();
        for (k, v) in props {
            c.set(k.as_ref(), v.as_ref())?;
        }
        Ok(c)
    }

    /// Sets one setting by its name (the original Paperboy's: `with_bulk_mode`,
    /// `bulk_mode_timeout_ms`, ...; `bulk_mode_threshold`, `dead_letter_topic` and
    /// `max_pending_records` take `none` for none).
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for a key the engine does not know,
    /// [`ConfigError::InvalidValue`] for a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigError> {
        let none = value.trim().eq_ignore_ascii_case("none") || value.trim().is_empty();
        match key {
            "with_commit" => self.with_commit = parse_bool(key, value)?,
            "fail_on_exception" => self.fail_on_exception = parse_bool(key, value)?,
            "with_bulk_mode" => self.with_bulk_mode = parse_bool(key, value)?,
            "bulk_mode_timeout_ms" => self.bulk_mode_timeout = parse_ms(key, value, 1)?,
            "bulk_mode_max_records" => self.bulk_mode_max_records = parse_num(key, value, 1)?,
            "bulk_mode_threshold" => {
                self.bulk_mode_threshold = if none {
                    None
                } else {
                    Some(parse_num(key, value, 0)?)
                }
            }
            "commit_interval_ms" => self.commit_interval = parse_ms(key, value, 1)?,
            "max_retries" => self.max_retries = parse_num(key, value, 0)?,
            "retry_backoff_ms" => self.retry_backoff = parse_ms(key, value, 0)?,
            "retry_backoff_max_ms" => self.retry_backoff_max = parse_ms(key, value, 0)?,
            "dead_letter_topic" => {
                self.dead_letter_topic = (!none).then(|| value.trim().to_owned())
            }
            "max_concurrency" => self.max_concurrency = parse_num(key, value, 1)?,
            "max_pending_records" => {
                self.max_pending_records = if none {
                    None
                } else {
                    Some(parse_num(key, value, 1)?)
                }
            }
            "shutdown_timeout_ms" => self.shutdown_timeout = parse_ms(key, value, 0)?,
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_owned(),
                })
            }
        }
        Ok(self)
    }

    pub(super) fn validate(&self) -> std::result::Result<(), ConfigError> {
        if self.bulk_mode_max_records == 0 {
            return Err(invalid("bulk_mode_max_records", "0", "at least 1"));
        }
        if self.bulk_mode_timeout.is_zero() {
            return Err(invalid("bulk_mode_timeout_ms", "0", "at least 1"));
        }
        if self.commit_interval.is_zero() {
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
