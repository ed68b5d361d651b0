//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! Call sites stay one line and carry no `cfg`: every type and function here has a
//! feature-off twin (zero-sized types, empty `#[inline(always)]` functions) that compiles
//! to nothing. With the feature on, handles are built once (per connection, producer,
//! consumer, partition, engine worker) and kept, so a hot path does an atomic add, not a
//! registry look-up or a label allocation; only rare events (errors, retries) go through
//! the macros.
//!
//! Handles are bound to the recorder installed when they are built: install the recorder
//! (e.g. `metrics-exporter-prometheus`) before connecting a client.
//!
//! The names follow OpenTelemetry's messaging semantic conventions where they define one
//! (`messaging.client.sent.messages`, `messaging.client.consumed.messages`,
//! `messaging.client.operation.duration`, `messaging.process.duration`), and are
//! `paperboy.*` otherwise; the README lists them.

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// Metric names (also listed in the README's Metrics section).
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) mod names {
    /// Histogram, seconds: one Kafka API request, sent to answered (connection layer).
    pub const OPERATION_DURATION: &str = "messaging.client.operation.duration";
    /// Counter: records acknowledged by the broker.
    pub const SENT_MESSAGES: &str = "messaging.client.sent.messages";
    /// Counter: bytes of the records acknowledged (keys, values and headers).
    pub const SENT_BYTES: &str = "paperboy.producer.sent.bytes";
    /// Counter: record batches acknowledged.
    pub const SENT_BATCHES: &str = "paperboy.producer.sent.batches";
    /// Gauge: bytes buffered in the producer (not yet acknowledged).
    pub const BUFFER_BYTES: &str = "paperboy.producer.buffer.bytes";
    /// Gauge: records buffered in the producer (not yet acknowledged).
    pub const BUFFER_RECORDS: &str = "paperboy.producer.buffer.records";
    /// Counter: records handed to the application by the consumer.
    pub const CONSUMED_MESSAGES: &str = "messaging.client.consumed.messages";
    /// Counter: bytes (keys and values) of the records handed out.
    pub const CONSUMED_BYTES: &str = "paperboy.consumer.consumed.bytes";
    /// Gauge: bytes of the consumer's prefetch budget in use.
    pub const PREFETCH_BYTES: &str = "paperboy.consumer.prefetch.bytes";
    /// Gauge: records between a partition's position and its high watermark.
    pub const LAG: &str = "paperboy.consumer.lag";
    /// Counter: errors operations ended with, by `error.type`.
    pub const ERRORS: &str = "paperboy.client.errors";
    /// Counter: retries.
    pub const RETRIES: &str = "paperboy.client.retries";
    /// Counter: connections opened.
    pub const CONNECTS: &str = "paperboy.client.connects";
    /// Counter: connections closed or lost.
    pub const DISCONNECTS: &str = "paperboy.client.disconnects";
    /// Histogram, seconds: one handler call of the engine (a record or a bulk batch).
    pub const PROCESS_DURATION: &str = "messaging.process.duration";
    /// Counter: records the engine's handlers handled.
    pub const HANDLED: &str = "paperboy.engine.handled.messages";
    /// Counter: records whose handling failed for good.
    pub const FAILED: &str = "paperboy.engine.failed.messages";
    /// Counter: handler calls tried again.
    pub const HANDLER_RETRIES: &str = "paperboy.engine.retries";
}

#[cfg(feature = "metrics")]
mod on {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use kafka_protocol::messages::ApiKey;
    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, Label, SharedString};

    use super::names::*;
    use crate::error::Error;

    const TOPIC: &str = "messaging.destination.name";
    const PARTITION: &str = "messaging.destination.partition.id";
    const OPERATION: &str = "messaging.operation.name";
    const GROUP: &str = "messaging.consumer.group.name";
    const CLIENT: &str = "messaging.client.id";
    const SERVER: &str = "server.address";
    const PORT: &str = "server.port";
    const ERROR_TYPE: &str = "error.type";

    /// When something started (an `Instant`; nothing without the feature).
    #[derive(Clone, Copy)]
    pub(crate) struct Start(Instant);

    impl Start {
        #[inline]
        pub(crate) fn now() -> Start {
            Start(Instant::now())
        }

        fn secs(self) -> f64 {
            self.0.elapsed().as_secs_f64()
        }
    }

    /// `error.type` of an error: Kafka's name for a broker's error code
    /// (`NOT_LEADER_OR_FOLLOWER`), the error's kind otherwise.
    pub(crate) fn error_type(e: &Error) -> &'static str {
        match e {
            Error::Kafka { code, .. } => code.name(),
            Error::Config(_) => "config",
            Error::Io { .. } => "io",
            Error::Disconnected { .. } => "disconnected",
            Error::Timeout { .. } => "timeout",
            Error::Protocol { .. } => "protocol",
            Error::Decode(_) => "decode",
            Error::Encode(_) => "encode",
            Error::RecordTooLarge { .. } => "record_too_large",
            Error::BufferFull { .. } => "buffer_full",
            Error::Json(_) => "json",
            Error::IncompleteResponse(_) => "incomplete_response",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::NoBrokerAvailable(_) => "no_broker_available",
            Error::UnknownTopicOrPartition { .. } => "UNKNOWN_TOPIC_OR_PARTITION",
            Error::NotAssigned(_) => "not_assigned",
            Error::NoOffset(_) => "no_offset",
            Error::FetchFailed { .. } => "fetch_failed",
            Error::LogTruncation { .. } => "log_truncation",
            Error::Tls { .. } => "tls",
            Error::Authentication { .. } => "authentication",
            Error::Fenced { .. } => "fenced",
            Error::Transaction { .. } => "transaction",
            Error::Closed => "closed",
        }
    }

    /// The API's name as Kafka writes it (`Produce`, `Fetch`), made once per key.
    fn api_name(api: ApiKey) -> SharedString {
        static NAMES: Mutex<Option<HashMap<ApiKey, SharedString>>> = Mutex::new(None);
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        names
            .get_or_insert_with(HashMap::new)
            .entry(api)
            .or_insert_with(|| SharedString::from(Arc::<str>::from(format!("{api:?}"))))
            .clone()
    }

    /// Counts an error an operation of client `client_id` ended with
    /// (`paperboy.client.errors`; rare: through the registry).
    pub(crate) fn error(operation: &str, client_id: &str, e: &Error) {
        counter!(
            ERRORS,
            OPERATION => operation.to_owned(),
            CLIENT => client_id.to_owned(),
            ERROR_TYPE => error_type(e)
        )
        .increment(1);
    }

    /// Counts a retry of an operation of client `client_id` (`paperboy.client.retries`).
    pub(crate) fn retry(operation: &str, client_id: &str) {
        counter!(RETRIES, OPERATION => operation.to_owned(), CLIENT => client_id.to_owned())
            .increment(1);
    }

    /// One connection's metrics: its broker (host and port) and client id, and a
    /// request-duration histogram per API, made on the API's first request.
    pub(crate) struct Conn {
        labels: Vec<Label>,
        durations: Mutex<HashMap<ApiKey, Histogram>>,
    }

    impl Conn {
        pub(crate) fn new(broker: &str, client_id: &str) -> Conn {
            let mut labels = match crate::config::parse_host_port(broker) {
                Some((host, port)) => vec![
                    Label::new(SERVER, host.to_owned()),
                    Label::new(PORT, port.to_string()),
                ],
                None => vec![Label::new(SERVER, broker.to_owned())],
            };
            labels.push(Label::new(CLIENT, client_id.to_owned()));
            Conn {
                labels,
                durations: Mutex::new(HashMap::new()),
            }
        }

        pub(crate) fn connected(&self) {
            counter!(CONNECTS, self.labels.clone()).increment(1);
        }

        pub(crate) fn disconnected(&self) {
            counter!(DISCONNECTS, self.labels.clone()).increment(1);
        }

        /// A connection attempt failed.
        pub(crate) fn connect_failed(&self, e: &Error) {
            let mut labels = self.labels.clone();
            labels.push(Label::new(OPERATION, "connect"));
            labels.push(Label::new(ERROR_TYPE, error_type(e)));
            counter!(ERRORS, labels).increment(1);
        }

        /// A request of `api` started at `start` ended, with `error` if it failed (then
        /// recorded with an `error.type` label).
        pub(crate) fn request(&self, api: ApiKey, start: Start, error: Option<&Error>) {
            let secs = start.secs();
            if let Some(e) = error {
                let mut labels = self.labels.clone();
                labels.push(Label::new(OPERATION, api_name(api)));
                labels.push(Label::new(ERROR_TYPE, error_type(e)));
                histogram!(OPERATION_DURATION, labels).record(secs);
                return;
            }
            let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
            durations
                .entry(api)
                .or_insert_with(|| {
                    let mut labels = self.labels.clone();
                    labels.push(Label::new(OPERATION, api_name(api)));
                    histogram!(OPERATION_DURATION, labels)
                })
                .record(secs);
        }
    }

    struct TopicSent {
        messages: Counter,
        bytes: Counter,
        batches: Counter,
    }

    /// A producer's metrics: buffer gauges, and sent counters per topic.
    pub(crate) struct Producer {
        client: SharedString,
        buffer_bytes: Gauge,
        buffer_records: Gauge,
        topics: Mutex<HashMap<Arc<str>, TopicSent>>,
    }

    impl Producer {
        pub(crate) fn new(client_id: &str) -> Producer {
            let client = SharedString::from(client_id.to_owned());
            Producer {
                buffer_bytes: gauge!(BUFFER_BYTES, CLIENT => client.clone()),
                buffer_records: gauge!(BUFFER_RECORDS, CLIENT => client.clone()),
                client,
                topics: Mutex::new(HashMap::new()),
            }
        }

        /// What the producer holds now (buffered or in flight, not yet acknowledged).
        #[inline]
        pub(crate) fn buffer(&self, bytes: usize, records: usize) {
            self.buffer_bytes.set(bytes as f64);
            self.buffer_records.set(records as f64);
        }

        /// A batch of `records` records of `bytes` bytes to `topic` was acknowledged.
        pub(crate) fn sent(&self, topic: &Arc<str>, records: usize, bytes: usize) {
            let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let t = topics.entry(topic.clone()).or_insert_with(|| {
                let labels = [
                    Label::new(TOPIC, SharedString::from(topic.clone())),
                    Label::new(CLIENT, self.client.clone()),
                ];
                TopicSent {
                    messages: counter!(SENT_MESSAGES, labels.to_vec()),
                    bytes: counter!(SENT_BYTES, labels.to_vec()),
                    batches: counter!(SENT_BATCHES, labels.to_vec()),
                }
            });
            t.messages.increment(records as u64);
            t.bytes.increment(bytes as u64);
            t.batches.increment(1);
        }
    }

    /// A consumer's metrics: its prefetch gauge, and the labels its partitions' handles
    /// are made with.
    pub(crate) struct Consumer {
        client: SharedString,
        group: Option<SharedString>,
        prefetch: Gauge,
    }

    impl Consumer {
        pub(crate) fn new(client_id: &str, group: Option<&str>) -> Consumer {
            let client = SharedString::from(client_id.to_owned());
            let group = group.map(|g| SharedString::from(g.to_owned()));
            let mut labels = vec![Label::new(CLIENT, client.clone())];
            if let Some(g) = &group {
                labels.push(Label::new(GROUP, g.clone()));
            }
            Consumer {
                prefetch: gauge!(PREFETCH_BYTES, labels),
                client,
                group,
            }
        }

        /// Bytes of the prefetch budget in use now.
        #[inline]
        pub(crate) fn prefetch(&self, bytes: usize) {
            self.prefetch.set(bytes as f64);
        }
    }

    struct PartHandles {
        messages: Counter,
        bytes: Counter,
        lag: Gauge,
    }

    /// One assigned partition's handles, made on first use.
    pub(crate) struct Part(Option<Box<PartHandles>>);

    impl Part {
        pub(crate) fn new() -> Part {
            Part(None)
        }

        fn get(&mut self, c: &Consumer, topic: &Arc<str>, partition: i32) -> &PartHandles {
            self.0.get_or_insert_with(|| {
                let mut labels = vec![
                    Label::new(TOPIC, SharedString::from(topic.clone())),
                    Label::new(PARTITION, partition.to_string()),
                    Label::new(CLIENT, c.client.clone()),
                ];
                if let Some(g) = &c.group {
                    labels.push(Label::new(GROUP, g.clone()));
                }
                Box::new(PartHandles {
                    messages: counter!(CONSUMED_MESSAGES, labels.clone()),
                    bytes: counter!(CONSUMED_BYTES, labels.clone()),
                    lag: gauge!(LAG, labels),
                })
            })
        }

        /// `records` records of `bytes` bytes handed to the application.
        pub(crate) fn consumed(
            &mut self,
            c: &Consumer,
            topic: &Arc<str>,
            partition: i32,
            records: usize,
            bytes: usize,
        ) {
            let h = self.get(c, topic, partition);
            h.messages.increment(records as u64);
            h.bytes.increment(bytes as u64);
        }

        /// The partition's lag now.
        pub(crate) fn lag(&mut self, c: &Consumer, topic: &Arc<str>, partition: i32, lag: i64) {
            self.get(c, topic, partition).lag.set(lag.max(0) as f64);
        }
    }

    /// An engine worker's handles (its partition's topic).
    pub(crate) struct Engine {
        duration: Histogram,
        handled: Counter,
        failed: Counter,
    }

    impl Engine {
        pub(crate) fn new(topic: &str) -> Engine {
            let topic = SharedString::from(topic.to_owned());
            Engine {
                duration: histogram!(PROCESS_DURATION, TOPIC => topic.clone()),
                handled: counter!(HANDLED, TOPIC => topic.clone()),
                failed: counter!(FAILED, TOPIC => topic),
            }
        }

        /// A unit of `records` records, started at `start`, is handled.
        #[inline]
        pub(crate) fn handled(&self, start: Start, records: usize) {
            self.duration.record(start.secs());
            self.handled.increment(records as u64);
        }

        /// A unit of `records` records failed for good.
        #[inline]
        pub(crate) fn failed(&self, records: usize) {
            self.failed.increment(records as u64);
        }
    }

    /// A handler call of `topic` is tried again (rare: through the registry).
    pub(crate) fn handler_retry(topic: &str) {
        counter!(HANDLER_RETRIES, TOPIC => topic.to_owned()).increment(1);
    }
}

/// Without the feature: the same names, doing nothing.
#[cfg(not(feature = "metrics"))]
#[allow(dead_code, clippy::unused_self)]
mod off {
    use std::sync::Arc;

    use kafka_protocol::messages::ApiKey;

    use crate::error::Error;

    #[derive(Clone, Copy)]
    pub(crate) struct Start;

    impl Start {
        #[inline(always)]
        pub(crate) fn now() -> Start {
            Start
        }
    }

    #[inline(always)]
    pub(crate) fn error(_: &str, _: &str, _: &Error) {}

    #[inline(always)]
    pub(crate) fn retry(_: &str, _: &str) {}

    pub(crate) struct Conn;

    impl Conn {
        #[inline(always)]
        pub(crate) fn new(_: &str, _: &str) -> Conn {
            Conn
        }
        #[inline(always)]
        pub(crate) fn connected(&self) {}
        #[inline(always)]
        pub(crate) fn disconnected(&self) {}
        #[inline(always)]
        pub(crate) fn connect_failed(&self, _: &Error) {}
        #[inline(always)]
        pub(crate) fn request(&self, _: ApiKey, _: Start, _: Option<&Error>) {}
    }

    pub(crate) struct Producer;

    impl Producer {
        #[inline(always)]
        pub(crate) fn new(_: &str) -> Producer {
            Producer
        }
        #[inline(always)]
        pub(crate) fn buffer(&self, _: usize, _: usize) {}
        #[inline(always)]
        pub(crate) fn sent(&self, _: &Arc<str>, _: usize, _: usize) {}
    }

    pub(crate) struct Consumer;

    impl Consumer {
        #[inline(always)]
        pub(crate) fn new(_: &str, _: Option<&str>) -> Consumer {
            Consumer
        }
        #[inline(always)]
        pub(crate) fn prefetch(&self, _: usize) {}
    }

    pub(crate) struct Part;

    impl Part {
        #[inline(always)]
        pub(crate) fn new() -> Part {
            Part
        }
        #[inline(always)]
        pub(crate) fn consumed(&mut self, _: &Consumer, _: &Arc<str>, _: i32, _: usize, _: usize) {}
        #[inline(always)]
        pub(crate) fn lag(&mut self, _: &Consumer, _: &Arc<str>, _: i32, _: i64) {}
    }

    pub(crate) struct Engine;

    impl Engine {
        #[inline(always)]
        pub(crate) fn new(_: &str) -> Engine {
            Engine
        }
        #[inline(always)]
        pub(crate) fn handled(&self, _: Start, _: usize) {}
        #[inline(always)]
        pub(crate) fn failed(&self, _: usize) {}
    }

    #[inline(always)]
    pub(crate) fn handler_retry(_: &str) {}
}
