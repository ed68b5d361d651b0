//! Consumer configuration by librdkafka/Java property names.

use std::time::Duration;

use crate::client::IsolationLevel;
use crate::config::{
    from_properties, invalid, non_empty, parse_bool, parse_kib, parse_ms, parse_num, unknown_key,
    ClientConfig,
};
use crate::error::ConfigError;

use super::assignor::AssignmentStrategy;

/// Which consumer group protocol a subscribing consumer speaks (`group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup/Heartbeat, with assignors run by the group leader (the
    /// default, as in Java and librdkafka).
    #[default]
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat, assignments computed by the broker
    /// (`group.remote.assignor`), incremental revocations; Kafka 4.0+.
    Consumer,
}

/// What to do when a partition has no committed offset, or its offset is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Start from the first offset still in the log.
    Earliest,
    /// Start from the end: only records written from now on.
    Latest,
    /// Fail: [`Consumer::recv`](super::Consumer::recv) returns the error.
    Error,
}

/// Consumer settings, by the property names librdkafka and the Java client use.
///
/// | property | default | meaning |
/// |---|---|---|
/// | `group.id` | none | the consumer group; required by [`subscribe`](super::Consumer::subscribe) |
/// | `group.instance.id` | none | static membership: a restart within the session timeout keeps the assignment |
/// | `group.protocol` | `classic` | `classic` (JoinGroup/SyncGroup, client-side assignors) or `consumer` (KIP-848: the broker assigns, Kafka 4.0+); see the README's "Group protocols" |
/// | `group.remote.assignor` | none (the broker's default) | `group.protocol=consumer` only: the broker-side assignor, `uniform` or `range` |
/// | `partition.assignment.strategy` | `range,cooperative-sticky` | `group.protocol=classic` only: assignors offered, in preference order: `range`, `roundrobin`, `cooperative-sticky` (or the Java class names) |
/// | `session.timeout.ms` | 45000 | `group.protocol=classic` only (with `consumer` the broker's `group.consumer.session.timeout.ms`): how long the coordinator waits for a heartbeat |
/// | `heartbeat.interval.ms` | 3000 | `group.protocol=classic` only (with `consumer` the interval the broker returns): how often heartbeats are sent |
/// | `max.poll.interval.ms` | 300000 | longest gap between `recv` calls before the consumer leaves the group |
/// | `enable.auto.commit` | true | commit consumed positions every `auto.commit.interval.ms`, before a rebalance and on close |
/// | `auto.commit.interval.ms` | 5000 | |
/// | `auto.offset.reset` | latest | `earliest`, `latest` or `error` (librdkafka's `smallest`/`beginning`, `largest`/`end` too) |
/// | `fetch.min.bytes` | 1 | bytes a broker waits for before answering a fetch |
/// | `fetch.max.wait.ms` (`fetch.wait.max.ms`) | 500 | how long it waits for them |
/// | `fetch.max.bytes` | 52428800 | cap on one fetch response |
/// | `max.partition.fetch.bytes` (`fetch.message.max.bytes`) | 1048576 | cap per partition in one fetch; a partition holds at most this much, as fetched, ahead of the application |
/// | `queued.max.messages.kbytes` | 65536 | the prefetch budget in KiB: the most the consumer holds for fetched data, across all partitions, decompressed batches included (plus at most one batch); a fetch asks for no more than it has left |
/// | `isolation.level` | read_uncommitted | or `read_committed`: skip aborted transactions |
/// | `allow.auto.create.topics` | false | subscribing to a missing topic asks the broker to create it (where it allows) |
/// | `fetch.error.timeout.ms` | 60000 | Paperboy's own: a partition whose fetches keep failing (broker gone, not answering, answering garbage) for this long surfaces [`Error::FetchFailed`](crate::Error::FetchFailed) from `recv`/`recv_batch`, once per period, while fetching is retried (backoff from `retry.backoff.ms` to `retry.backoff.max.ms`, each time on a fresh connection) and the other partitions go on |
///
/// Plus every [`ClientConfig`] property (`bootstrap.servers`, `client.id`, ...). An
/// unknown key or a malformed value is an error that names it.
///
/// # Example
/// ```
/// use paperboy::consumer::ConsumerConfig;
///
/// let config = ConsumerConfig::from_properties([
///     ("bootstrap.servers", "127.0.0.1:9092"),
///     ("group.id", "billing"),
///     ("auto.offset.reset", "earliest"),
///     ("queued.max.messages.kbytes", "4096"),
/// ])?;
/// assert_eq!(config.prefetch_budget(), 4 << 20);
///
/// let err = ConsumerConfig::from_properties([("group.idd", "x")]).unwrap_err();
/// assert_eq!(err.to_string(), "unknown configuration key `group.idd`");
/// # Ok::<(), paperboy::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub(crate) client: ClientConfig,
    pub(crate) group_id: Option<String>,
    pub(crate) group_instance_id: Option<String>,
    pub(crate) group_protocol: GroupProtocol,
    pub(crate) remote_assignor: Option<String>,
    /// Classic-only keys set explicitly (rejected with `group.protocol=consumer`).
    pub(crate) classic_keys: Vec<&'static str>,
    pub(crate) strategies: Vec<AssignmentStrategy>,
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) max_poll_interval: Duration,
    pub(crate) auto_commit: bool,
    pub(crate) auto_commit_interval: Duration,
    pub(crate) offset_reset: OffsetReset,
    pub(crate) fetch_min_bytes: i32,
    pub(crate) fetch_max_wait: Duration,
    pub(crate) fetch_max_bytes: i32,
    pub(crate) partition_max_bytes: i32,
    pub(crate) fetch_error_timeout: Duration,
    pub(crate) prefetch_budget: usize,
    pub(crate) isolation: IsolationLevel,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            client: ClientConfig::default(),
            group_id: None,
            group_instance_id: None,
            group_protocol: GroupProtocol::Classic,
            remote_assignor: None,
            classic_keys: Vec::new(),
            strategies: vec![
                AssignmentStrategy::Range,
                AssignmentStrategy::CooperativeSticky,
            ],
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            offset_reset: OffsetReset::Latest,
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            fetch_error_timeout: Duration::from_secs(60),
            prefetch_budget: 64 << 20,
            isolation: IsolationLevel::ReadUncommitted,
        }
    }
}

impl ConsumerConfig {
    /// The defaults, with these bootstrap servers.
    pub fn new(bootstrap_servers: &str) -> Self {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap_servers),
            ..ConsumerConfig::default()
        }
    }

    /// Builds a configuration from properties, starting from the defaults.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first unknown key or malformed value.
    pub fn from_properties<I, K, V>(props: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        from_properties(ConsumerConfig::default(), ConsumerConfig::set, props)
    }

    /// Sets one property by its librdkafka/Java name.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for a key the consumer does not know,
    /// [`ConfigError::InvalidValue`] for a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigError> {
        match key {
            "group.id" => self.group_id = non_empty(value),
            "group.instance.id" => self.group_instance_id = non_empty(value),
            "group.protocol" => {
                self.group_protocol = match value.trim().to_ascii_lowercase().as_str() {
                    "classic" => GroupProtocol::Classic,
                    "consumer" => GroupProtocol::Consumer,
                    _ => return Err(invalid(key, value, "classic or consumer")),
                }
            }
            "group.remote.assignor" => self.remote_assignor = non_empty(value),
            "partition.assignment.strategy" => {
                self.mark_classic("partition.assignment.strategy");
                let mut strategies = Vec::new();
                for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let s = AssignmentStrategy::parse(name).ok_or_else(|| {
                        invalid(key, value, "range, roundrobin or cooperative-sticky")
                    })?;
                    if !strategies.contains(&s) {
                        strategies.push(s);
                    }
                }
                if strategies.is_empty() {
                    return Err(invalid(
                        key,
                        value,
                        "range, roundrobin or cooperative-sticky",
                    ));
                }
                self.strategies = strategies;
            }
            "session.timeout.ms" => {
                self.session_timeout = parse_ms(key, value, 1)?;
                self.mark_classic("session.timeout.ms");
            }
            "heartbeat.interval.ms" => {
                self.heartbeat_interval = parse_ms(key, value, 1)?;
                self.mark_classic("heartbeat.interval.ms");
            }
            "max.poll.interval.ms" => self.max_poll_interval = parse_ms(key, value, 1)?,
            "enable.auto.commit" => self.auto_commit = parse_bool(key, value)?,
            "auto.commit.interval.ms" => self.auto_commit_interval = parse_ms(key, value, 1)?,
            "auto.offset.reset" => {
                self.offset_reset = match value.trim().to_ascii_lowercase().as_str() {
                    "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
                    "latest" | "largest" | "end" => OffsetReset::Latest,
                    "error" | "none" => OffsetReset::Error,
                    _ => return Err(invalid(key, value, "earliest, latest or error")),
                }
            }
            "fetch.min.bytes" => self.fetch_min_bytes = parse_num(key, value, 1)?,
            "fetch.max.wait.ms" | "fetch.wait.max.ms" => {
                self.fetch_max_wait = parse_ms(key, value, 0)?
            }
            "fetch.max.bytes" => self.fetch_max_bytes = parse_num(key, value, 1024)?,
            "max.partition.fetch.bytes" | "fetch.message.max.bytes" => {
                self.partition_max_bytes = parse_num(key, value, 1)?
            }
            "queued.max.messages.kbytes" => self.prefetch_budget = parse_kib(key, value)?,
            "fetch.error.timeout.ms" => self.fetch_error_timeout = parse_ms(key, value, 1)?,
            "isolation.level" => {
                self.isolation = match value.trim() {
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => return Err(invalid(key, value, "read_uncommitted or read_committed")),
                }
            }
            _ => {
                if !self.client.try_set(key, value)? {
                    return Err(unknown_key(key));
                }
            }
        }
        Ok(self)
    }

    fn mark_classic(&mut self, key: &'static str) {
        if !self.classic_keys.contains(&key) {
            self.classic_keys.push(key);
        }
    }

    /// Forgets which classic-only keys were set so far: defaults a wrapper applied (the
    /// PHQ consumer's) are not the caller's, and must not fail `group.protocol=consumer`.
    pub(crate) fn forget_classic_keys(&mut self) {
        self.classic_keys.clear();
    }

    /// The group protocol (`group.protocol`).
    pub fn group_protocol(&self) -> GroupProtocol {
        self.group_protocol
    }

    /// Sets `group.protocol`.
    #[must_use]
    pub fn with_group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.group_protocol = protocol;
        self
    }

    /// The broker-side assignor asked for (`group.remote.assignor`), if any.
    pub fn remote_assignor(&self) -> Option<&str> {
        self.remote_assignor.as_deref()
    }

    /// The client settings inside.
    pub fn client(&self) -> &ClientConfig {
        &self.client
    }

    /// The consumer group, if any.
    pub fn group_id(&self) -> Option<&str> {
        self.group_id.as_deref()
    }

    /// Sets `group.id`.
    #[must_use]
    pub fn with_group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = non_empty(&group.into());
        self
    }

    /// Sets `auto.offset.reset`.
    #[must_use]
    pub fn with_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Sets `enable.auto.commit`.
    #[must_use]
    pub fn with_auto_commit(mut self, on: bool) -> Self {
        self.auto_commit = on;
        self
    }

    /// Whether auto-commit is on.
    pub fn auto_commit(&self) -> bool {
        self.auto_commit
    }

    /// The prefetch budget in bytes: the most record data buffered across all
    /// partitions (`queued.max.messages.kbytes` x 1024).
    pub fn prefetch_budget(&self) -> usize {
        self.prefetch_budget
    }

    /// Sets the prefetch budget in bytes (at least 1 KiB).
    #[must_use]
    pub fn with_prefetch_budget(mut self, bytes: usize) -> Self {
        self.prefetch_budget = bytes.max(1024);
        self
    }

    /// Sets `isolation.level`.
    #[must_use]
    pub fn with_isolation(mut self, isolation: IsolationLevel) -> Self {
        self.isolation = isolation;
        self
    }

    /// Whether rebalances follow the cooperative protocol (KIP-429): only when every
    /// configured assignor is cooperative, as in the Java client. Otherwise every
    /// rebalance revokes all partitions first (eager).
    pub(crate) fn cooperative(&self) -> bool {
        self.strategies.iter().all(|s| s.is_cooperative())
    }

    /// Sets `partition.assignment.strategy`.
    #[must_use]
    pub fn with_assignment_strategy(mut self, strategies: &[AssignmentStrategy]) -> Self {
        if !strategies.is_empty() {
            self.strategies = strategies.to_vec();
            self.mark_classic("partition.assignment.strategy");
        }
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.client.validate()?;
        if self.group_protocol == GroupProtocol::Consumer {
            // As the Java client: these are the broker's with the consumer protocol
            // (group.consumer.session.timeout.ms, group.consumer.heartbeat.interval.ms,
            // group.remote.assignor).
            if let Some(key) = self.classic_keys.first() {
                let instead = match *key {
                    "partition.assignment.strategy" => {
                        "the broker assigns partitions: use group.remote.assignor (uniform or range)"
                    }
                    "session.timeout.ms" => {
                        "the broker's group.consumer.session.timeout.ms (or the group's consumer.session.timeout.ms) applies"
                    }
                    _ => {
                        "the broker's group.consumer.heartbeat.interval.ms (or the group's consumer.heartbeat.interval.ms) applies"
                    }
                };
                return Err(ConfigError::Invalid(format!(
                    "`{key}` is not supported with group.protocol=consumer: {instead}"
                )));
            }
            return Ok(());
        }
        if let Some(a) = &self.remote_assignor {
            return Err(ConfigError::Invalid(format!(
                "`group.remote.assignor` ({a}) needs group.protocol=consumer; with the classic protocol use partition.assignment.strategy"
            )));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(invalid(
                "heartbeat.interval.ms",
                &self.heartbeat_interval.as_millis().to_string(),
                "less than session.timeout.ms",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_errors_name_the_key() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("group.id", "g"),
            ("auto.offset.reset", "smallest"),
            ("partition.assignment.strategy", "roundrobin"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "100"),
        ])
        .unwrap();
        assert_eq!(c.group_id(), Some("g"));
        assert_eq!(c.offset_reset, OffsetReset::Earliest);
        assert_eq!(c.strategies, vec![AssignmentStrategy::RoundRobin]);
        assert_eq!(c.isolation, IsolationLevel::ReadCommitted);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(100));
        let e = ConsumerConfig::from_properties([("auto.offset.reset", "start")]).unwrap_err();
        assert!(e.to_string().contains("auto.offset.reset"), "{e}");
        let e = ConsumerConfig::from_properties([("partition.assignment.strategy", "sticky")])
            .unwrap_err();
        assert!(
            e.to_string().contains("partition.assignment.strategy"),
            "{e}"
        );
        let e = ConsumerConfig::from_properties([("linger.ms", "5")]).unwrap_err();
        assert_eq!(e.to_string(), "unknown configuration key `linger.ms`");
    }

    #[test]
    fn the_consumer_protocol_rejects_classic_keys_by_name() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("group.protocol", "consumer"),
            ("group.remote.assignor", "uniform"),
        ])
        .unwrap();
        assert_eq!(c.group_protocol(), GroupProtocol::Consumer);
        assert_eq!(c.remote_assignor(), Some("uniform"));
        c.validate().unwrap();
        for key in [
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "partition.assignment.strategy",
        ] {
            let value = if key.ends_with(".ms") {
                "3000"
            } else {
                "range"
            };
            // In either order: the check is on the whole configuration.
            for props in [
                [
                    ("bootstrap.servers", "a:1"),
                    ("group.protocol", "consumer"),
                    (key, value),
                ],
                [
                    ("bootstrap.servers", "a:1"),
                    (key, value),
                    ("group.protocol", "consumer"),
                ],
            ] {
                let e = ConsumerConfig::from_properties(props)
                    .unwrap()
                    .validate()
                    .unwrap_err();
                assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
                assert!(e.to_string().contains("group.protocol=consumer"), "{e}");
            }
        }
        let e = ConsumerConfig::from_properties([("group.protocol", "kip848")]).unwrap_err();
        assert!(e.to_string().contains("group.protocol"), "{e}");
        // Classic stays the default, and keeps its keys.
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("session.timeout.ms", "10000"),
        ])
        .unwrap();
        assert_eq!(c.group_protocol(), GroupProtocol::Classic);
        c.validate().unwrap();
        let e = ConsumerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("group.remote.assignor", "range"),
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("group.remote.assignor"), "{e}");
    }

    #[test]
    fn heartbeat_must_be_shorter_than_the_session() {
        let c = ConsumerConfig::from_properties([
            ("bootstrap.servers", "a:1"),
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "3000"),
        ])
        .unwrap();
        assert!(c.validate().is_err());
    }
}
