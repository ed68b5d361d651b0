//! The engine's settings.

use std::time::Duration;

use crate::config::{from_properties, invalid, parse_bool, parse_ms, parse_num, unknown_key};
use crate::error::ConfigError;

/// The engine's settings: a typed builder (`with_*`, times as [`Duration`]s) over the
/// defaults, or properties by name ([`EngineConfig::from_properties`], [`set`](Self::set))
/// with the names and defaults of the original Paperboy's parameters (times in ms).
///
/// | property | builder | default | meaning |
/// |---|---|---|---|
/// | `with_commit` | [`with_commit`](Self::with_commit) | true | commit the offsets of handled records |
/// | `fail_on_exception` | [`with_fail_on_exception`](Self::with_fail_on_exception) | true | stop the engine when a record (or batch) fails for good; false: log it and skip it. A dead letter topic takes precedence |
/// | `with_bulk_mode` | [`with_bulk_mode`](Self::with_bulk_mode) | false | use bulk mode while a partition's backlog is above `bulk_mode_threshold`; false: every record handled alone |
/// | `bulk_mode_timeout_ms` | [`with_bulk_mode_timeout`](Self::with_bulk_mode_timeout) | 10000 | in bulk mode, how long a batch waits to fill |
/// | `bulk_mode_max_records` | [`with_bulk_mode_max_records`](Self::with_bulk_mode_max_records) | 10000 | in bulk mode, the most records in one batch |
/// | `bulk_mode_threshold` | [`with_bulk_mode_threshold`](Self::with_bulk_mode_threshold) | 1000 | backlog (records) above which a partition is in bulk mode; `none` stays in bulk mode |
/// | `commit_interval_ms` | [`with_commit_interval`](Self::with_commit_interval) | 10000 | in single mode, how often handled offsets are committed |
/// | `max_retries` | [`with_max_retries`](Self::with_max_retries) | 0 | how many times a failing record (or batch) is tried again |
/// | `retry_backoff_ms` | [`with_retry_backoff`](Self::with_retry_backoff) | 100 | wait before the first retry; doubled for each next one |
/// | `retry_backoff_max_ms` | [`with_retry_backoff`](Self::with_retry_backoff) | 10000 | the longest wait between retries |
/// | `dead_letter_topic` | [`with_dead_letter_topic`](Self::with_dead_letter_topic) | none | where records that failed their last attempt go, instead of stopping the engine or being skipped; `{topic}` is replaced by the record's topic |
/// | `max_concurrency` | [`with_max_concurrency`](Self::with_max_concurrency) | 16 | how many partitions are handled at once |
/// | `max_pending_records` | [`with_max_pending_records`](Self::with_max_pending_records) | none: `2 * bulk_mode_max_records` with bulk mode, else 1000 | records of one partition received and not yet handled above which the partition is paused (fetching resumes below half of it) |
/// | `shutdown_timeout_ms` | [`with_shutdown_timeout`](Self::with_shutdown_timeout) | 30000 | how long a stop (or a revocation) waits for handlers to finish the records they are on; records still unfinished then are not committed |
///
/// An unknown key, or a value that does not parse, is an error that names it. A value the
/// builder was given out of range (zero records, partitions or interval, an empty topic)
/// is refused, by its property name, when the engine is built
/// ([`EngineBuilder::build`](super::EngineBuilder::build)).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use paperboy::engine::EngineConfig;
///
/// let config = EngineConfig::default()
///     .with_bulk_mode(true)
///     .with_bulk_mode_threshold(Some(5_000))
///     .with_max_retries(3)
///     .with_dead_letter_topic("{topic}.dlq")
///     .with_commit_interval(Duration::from_secs(5));
/// assert!(config.commit());
/// assert_eq!(config.commit_interval(), Duration::from_secs(5));
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
    pub(crate) commit: bool,
    pub(crate) fail_on_exception: bool,
    pub(crate) bulk_mode: bool,
    pub(crate) bulk_mode_timeout: Duration,
    pub(crate) bulk_mode_max_records: usize,
    pub(crate) bulk_mode_threshold: Option<i64>,
    pub(crate) commit_interval: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) max_concurrency: usize,
    pub(crate) max_pending_records: Option<usize>,
    pub(crate) shutdown_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            commit: true,
            fail_on_exception: true,
            bulk_mode: false,
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
        from_properties(EngineConfig::default(), EngineConfig::set, props)
    }

    /// Sets one setting by its name (the original Paperboy's: `with_bulk_mode`,
    /// `bulk_mode_timeout_ms`, ...; `bulk_mode_threshold`, `dead_letter_topic` and
    /// `max_pending_records` take `none` for none).
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for a key the engine does not know,
    /// [`ConfigError::InvalidValue`] for a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigError> {
        // `none` (or nothing) for the settings that may be unset.
        let some = (!value.trim().eq_ignore_ascii_case("none") && !value.trim().is_empty())
            .then_some(value);
        match key {
            "with_commit" => self.commit = parse_bool(key, value)?,
            "fail_on_exception" => self.fail_on_exception = parse_bool(key, value)?,
            "with_bulk_mode" => self.bulk_mode = parse_bool(key, value)?,
            "bulk_mode_timeout_ms" => self.bulk_mode_timeout = parse_ms(key, value, 1)?,
            "bulk_mode_max_records" => self.bulk_mode_max_records = parse_num(key, value, 1)?,
            "bulk_mode_threshold" => {
                self.bulk_mode_threshold = some.map(|v| parse_num(key, v, 0)).transpose()?
            }
            "commit_interval_ms" => self.commit_interval = parse_ms(key, value, 1)?,
            "max_retries" => self.max_retries = parse_num(key, value, 0)?,
            "retry_backoff_ms" => self.retry_backoff = parse_ms(key, value, 0)?,
            "retry_backoff_max_ms" => self.retry_backoff_max = parse_ms(key, value, 0)?,
            "dead_letter_topic" => self.dead_letter_topic = some.map(|v| v.trim().to_owned()),
            "max_concurrency" => self.max_concurrency = parse_num(key, value, 1)?,
            "max_pending_records" => {
                self.max_pending_records = some.map(|v| parse_num(key, v, 1)).transpose()?
            }
            "shutdown_timeout_ms" => self.shutdown_timeout = parse_ms(key, value, 0)?,
            _ => return Err(unknown_key(key)),
        }
        Ok(self)
    }

    /// Sets whether the offsets of handled records are committed (`with_commit`).
    #[must_use]
    pub fn with_commit(mut self, on: bool) -> Self {
        self.commit = on;
        self
    }

    /// Whether the offsets of handled records are committed (`with_commit`).
    pub fn commit(&self) -> bool {
        self.commit
    }

    /// Sets whether a record that fails for good stops the engine (`fail_on_exception`).
    #[must_use]
    pub fn with_fail_on_exception(mut self, on: bool) -> Self {
        self.fail_on_exception = on;
        self
    }

    /// Whether a record that fails for good stops the engine (`fail_on_exception`).
    pub fn fail_on_exception(&self) -> bool {
        self.fail_on_exception
    }

    /// Sets whether partitions far behind are handled in batches (`with_bulk_mode`).
    #[must_use]
    pub fn with_bulk_mode(mut self, on: bool) -> Self {
        self.bulk_mode = on;
        self
    }

    /// Whether bulk mode is on (`with_bulk_mode`).
    pub fn bulk_mode(&self) -> bool {
        self.bulk_mode
    }

    /// Sets how long a batch waits to fill in bulk mode (`bulk_mode_timeout_ms`).
    #[must_use]
    pub fn with_bulk_mode_timeout(mut self, timeout: Duration) -> Self {
        self.bulk_mode_timeout = timeout;
        self
    }

    /// How long a batch waits to fill in bulk mode (`bulk_mode_timeout_ms`).
    pub fn bulk_mode_timeout(&self) -> Duration {
        self.bulk_mode_timeout
    }

    /// Sets the most records in one batch in bulk mode (`bulk_mode_max_records`).
    #[must_use]
    pub fn with_bulk_mode_max_records(mut self, records: usize) -> Self {
        self.bulk_mode_max_records = records;
        self
    }

    /// The most records in one batch in bulk mode (`bulk_mode_max_records`).
    pub fn bulk_mode_max_records(&self) -> usize {
        self.bulk_mode_max_records
    }

    /// Sets the backlog above which bulk mode is on; `None`: always (`bulk_mode_threshold`).
    #[must_use]
    pub fn with_bulk_mode_threshold(mut self, records: Option<i64>) -> Self {
        self.bulk_mode_threshold = records;
        self
    }

    /// The backlog above which a partition is in bulk mode; `None`: always (`bulk_mode_threshold`).
    pub fn bulk_mode_threshold(&self) -> Option<i64> {
        self.bulk_mode_threshold
    }

    /// Sets how often handled offsets are committed in single mode (`commit_interval_ms`).
    #[must_use]
    pub fn with_commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// How often handled offsets are committed in single mode (`commit_interval_ms`).
    pub fn commit_interval(&self) -> Duration {
        self.commit_interval
    }

    /// Sets how many times a failing record (or batch) is tried again (`max_retries`).
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// How many times a failing record (or batch) is tried again (`max_retries`).
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Sets the first and the longest retry wait (`retry_backoff_ms`, `retry_backoff_max_ms`).
    #[must_use]
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff = first;
        self.retry_backoff_max = max;
        self
    }

    /// The wait before the first retry, doubled for each next one (`retry_backoff_ms`).
    pub fn retry_backoff(&self) -> Duration {
        self.retry_backoff
    }

    /// The longest wait between retries (`retry_backoff_max_ms`).
    pub fn retry_backoff_max(&self) -> Duration {
        self.retry_backoff_max
    }

    /// Sets where failed records go, `{topic}` replaced by their topic (`dead_letter_topic`).
    #[must_use]
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Where failed records go, when set (`dead_letter_topic`).
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// Sets how many partitions are handled at once (`max_concurrency`).
    #[must_use]
    pub fn with_max_concurrency(mut self, partitions: usize) -> Self {
        self.max_concurrency = partitions;
        self
    }

    /// How many partitions are handled at once (`max_concurrency`).
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Sets the unhandled records above which a partition is paused (`max_pending_records`).
    #[must_use]
    pub fn with_max_pending_records(mut self, records: usize) -> Self {
        self.max_pending_records = Some(records);
        self
    }

    /// The unhandled records above which a partition is paused, when set; `None`: the
    /// default, `2 * bulk_mode_max_records` with bulk mode, else 1000 (`max_pending_records`).
    pub fn max_pending_records(&self) -> Option<usize> {
        self.max_pending_records
    }

    /// Sets how long a stop or a revocation waits for handlers to finish (`shutdown_timeout_ms`).
    #[must_use]
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a stop or a revocation waits for handlers to finish (`shutdown_timeout_ms`).
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
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
        self.max_pending_records.unwrap_or(if self.bulk_mode {
            self.bulk_mode_max_records.saturating_mul(2)
        } else {
            1000
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_and_properties_give_the_same_config() {
        let built = EngineConfig::default()
            .with_commit(false)
            .with_fail_on_exception(false)
            .with_bulk_mode(true)
            .with_bulk_mode_timeout(Duration::from_millis(250))
            .with_bulk_mode_max_records(500)
            .with_bulk_mode_threshold(None)
            .with_commit_interval(Duration::from_secs(2))
            .with_max_retries(4)
            .with_retry_backoff(Duration::from_millis(50), Duration::from_secs(3))
            .with_dead_letter_topic("{topic}.dlq")
            .with_max_concurrency(8)
            .with_max_pending_records(700)
            .with_shutdown_timeout(Duration::from_secs(5));
        let read = EngineConfig::from_properties([
            ("with_commit", "false"),
            ("fail_on_exception", "false"),
            ("with_bulk_mode", "true"),
            ("bulk_mode_timeout_ms", "250"),
            ("bulk_mode_max_records", "500"),
            ("bulk_mode_threshold", "none"),
            ("commit_interval_ms", "2000"),
            ("max_retries", "4"),
            ("retry_backoff_ms", "50"),
            ("retry_backoff_max_ms", "3000"),
            ("dead_letter_topic", " {topic}.dlq "),
            ("max_concurrency", "8"),
            ("max_pending_records", "700"),
            ("shutdown_timeout_ms", "5000"),
        ])
        .unwrap();
        assert_eq!(built, read);
        // Every setting differs from its default, so each key reached its field.
        let default = EngineConfig::default();
        assert_ne!(built, default);
        assert_eq!(format!("{built:?}"), format!("{read:?}"));
        assert_eq!(
            (built.commit(), built.bulk_mode(), built.dead_letter_topic()),
            (false, true, Some("{topic}.dlq"))
        );
        assert_eq!(built.max_pending(), 700);
        assert_eq!(default.max_pending(), 1000);
        assert_eq!(default.with_bulk_mode(true).max_pending(), 20_000);

        // `none` unsets what may be unset.
        let mut c = built.clone();
        c.set("dead_letter_topic", "none").unwrap();
        c.set("max_pending_records", "").unwrap();
        c.set("bulk_mode_threshold", "1000").unwrap();
        assert_eq!(
            (
                c.dead_letter_topic(),
                c.max_pending_records(),
                c.bulk_mode_threshold()
            ),
            (None, None, Some(1000))
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let e = EngineConfig::from_properties([("bulk_mode", "true")]).unwrap_err();
        assert_eq!(
            e,
            ConfigError::UnknownKey {
                key: "bulk_mode".into()
            }
        );
        assert_eq!(e.to_string(), "unknown configuration key `bulk_mode`");
        let e = EngineConfig::from_properties([("max_retries", "3"), ("commit_interval", "5")])
            .unwrap_err();
        assert_eq!(e.to_string(), "unknown configuration key `commit_interval`");
        let e = EngineConfig::from_properties([("commit_interval_ms", "soon")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value `soon` for `commit_interval_ms`: a whole number >= 1"
        );
        let e = EngineConfig::default()
            .set("with_commit", "yes")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value `yes` for `with_commit`: true or false"
        );
    }
}
