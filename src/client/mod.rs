//! The client core: bootstrap, the broker connection pool, metadata, coordinator lookup
//! and retries (this file); the partition-level data calls in `data.rs`; administration
//! (topics, configurations, groups, records) in `admin.rs`.
//!
//! [`Client`] is cheap to clone (an `Arc` inside); clones share connections and metadata.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{FindCoordinatorRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::conn::{Connection, Dialer};
use crate::error::{Error, Result};
use crate::metadata::Cluster;
use crate::telemetry;

mod admin;
mod data;

pub use admin::{
    ConfigEntry, ConfigResource, GroupDescription, GroupListing, MemberDescription, NewTopic,
};
pub use data::{Acks, FetchOptions, FetchedPartition, IsolationLevel, OffsetSpec, ProduceAck};

/// A Kafka protocol string (`StrBytes`) holding a copy of `v`; for the requests built
/// here and by the group and transaction coordinators' clients.
pub(crate) fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// `Ok` for error code 0 (NONE), else the error the code stands for, with the broker's
/// `message` if it sent one; `what` names the request (for the error's text).
pub(crate) fn check(code: i16, message: Option<&str>, what: impl FnOnce() -> String) -> Result<()> {
    match Error::from_code(code, message, what) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A connection to a Kafka cluster.
///
/// Created with [`Client::connect`]; clones share everything.
///
/// # Example
/// ```no_run
/// use paperboy::{Client, ClientConfig, NewTopic};
///
/// # async fn run() -> paperboy::Result<()> {
/// let client = Client::connect(ClientConfig::new("127.0.0.1:9092")).await?;
/// client.create_topics(&[NewTopic::new("events", 6, 1)]).await?;
/// let cluster = client.refresh_metadata(&["events"]).await?;
/// assert_eq!(cluster.topic("events").unwrap().partitions.len(), 6);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .field("client_id", &self.inner.config.client_id)
            .finish_non_exhaustive()
    }
}

type Slot = Arc<AsyncMutex<Option<Arc<Connection>>>>;

struct Inner {
    config: ClientConfig,
    /// How connections are opened: TLS built and SASL credentials resolved once.
    dialer: Dialer,
    /// The latest metadata snapshot. Replaced whole; the lock is held only to swap it.
    metadata: RwLock<Arc<Cluster>>,
    /// Serialises metadata refreshes so a burst of stale-metadata errors sends one request.
    refreshing: AsyncMutex<()>,
    /// One connection slot per broker address. The std mutex guards the map only; each
    /// slot's async mutex is held while its connection is being opened.
    conns: Mutex<HashMap<String, Slot>>,
    /// Round-robin cursor for requests any broker can answer.
    next_any: AtomicUsize,
    closed: AtomicBool,
}

impl Client {
    /// Connects to the cluster: opens a connection to the first reachable bootstrap
    /// server, negotiates API versions, and loads the broker list.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad configuration; [`Error::NoBrokerAvailable`] when no
    /// bootstrap server answers.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        config.validate()?;
        let dialer = Dialer::new(&config)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                dialer,
                metadata: RwLock::new(Arc::new(Cluster::default())),
                refreshing: AsyncMutex::new(()),
                conns: Mutex::new(HashMap::new()),
                next_any: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
        };
        let cluster = client.refresh_metadata(&[]).await?;
        info!(
            cluster_id = cluster.cluster_id.as_deref().unwrap_or("?"),
            brokers = cluster.brokers.len(),
            "connected to Kafka"
        );
        Ok(client)
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The latest metadata snapshot, without asking the cluster.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes every connection. Requests in flight fail with [`Error::Disconnected`];
    /// later calls fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let slots: Vec<Slot> = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in slots {
            s.lock().await.take();
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The connection to `addr`, opened if there is none or the old one broke.
    pub(crate) async fn conn_to(&self, addr: &str) -> Result<Arc<Connection>> {
        self.check_open()?;
        let slot = self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .clone();
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_poisoned() {
                return Ok(c.clone());
            }
        }
        let conn = Arc::new(self.open_connection(addr).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// A new connection to `addr` of its own, outside the pool (the group coordinator's,
    /// so commits do not queue behind long-poll fetches), with the client's settings.
    pub(crate) async fn open_connection(&self, addr: &str) -> Result<Connection> {
        self.check_open()?;
        Connection::connect(addr, &self.inner.dialer).await
    }

    /// The connection to broker `node_id`.
    pub(crate) async fn conn_to_node(&self, node_id: i32) -> Result<Arc<Connection>> {
        let addr = self
            .cluster()
            .brokers
            .get(&node_id)
            .map(|b| b.addr())
            .ok_or_else(|| Error::NoBrokerAvailable(format!("broker {node_id} is not known")))?;
        self.conn_to(&addr).await
    }

    /// A connection to any broker: known brokers in turn, then the bootstrap servers.
    pub(crate) async fn conn_to_any(&self) -> Result<Arc<Connection>> {
        let cluster = self.cluster();
        let mut addrs: Vec<String> = cluster.brokers.values().map(|b| b.addr()).collect();
        addrs.sort();
        let start = self.inner.next_any.fetch_add(1, Ordering::Relaxed);
        if !addrs.is_empty() {
            let n = addrs.len();
            addrs.rotate_left(start % n);
        }
        for b in &self.inner.config.bootstrap_servers {
            if !addrs.contains(b) {
                addrs.push(b.clone());
            }
        }
        let mut errors = Vec::new();
        for addr in &addrs {
            match self.conn_to(addr).await {
                Ok(c) => return Ok(c),
                // Settings that fail on one broker fail on every one: say so at once.
                Err(e @ (Error::Closed | Error::Tls { .. } | Error::Authentication { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    debug!(broker = %addr, error = %e, "broker unreachable");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        Err(Error::NoBrokerAvailable(errors.join("; ")))
    }

    /// The address (`host:port`) of the coordinator of `key`: a group (`key_type` 0) or
    /// a transactional id (1). One FindCoordinator request over a pooled connection; the
    /// caller retries.
    pub(crate) async fn find_coordinator(&self, key_type: i8, key: &str) -> Result<String> {
        let conn = self.conn_to_any().await?;
        self.find_coordinator_on(&conn, key_type, key)
            .await
            .map(|(_, addr)| addr)
    }

    /// As [`Client::find_coordinator`], over `conn` (the group's own connection to a
    /// coordinator it lost, say), with the coordinator's node id.
    pub(crate) async fn find_coordinator_on(
        &self,
        conn: &Connection,
        key_type: i8,
        key: &str,
    ) -> Result<(i32, String)> {
        let what = || {
            let kind = if key_type == 1 {
                "transactional id"
            } else {
                "group"
            };
            format!("find coordinator of {kind} {key}")
        };
        let version = conn.version_for::<FindCoordinatorRequest>()?;
        let key = StrBytes::from_string(key.to_owned());
        let req = if version >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        }
        .with_key_type(key_type);
        let resp = conn
            .request_at(&req, version, self.inner.config.request_timeout)
            .await?;
        let (code, message, node, host, port) = if version >= 4 {
            let c = resp.coordinators.first().ok_or_else(|| {
                Error::IncompleteResponse(format!("{}: no coordinator in the response", what()))
            })?;
            (
                c.error_code,
                c.error_message.clone(),
                c.node_id.0,
                c.host.clone(),
                c.port,
            )
        } else {
            (
                resp.error_code,
                resp.error_message.clone(),
                resp.node_id.0,
                resp.host,
                resp.port,
            )
        };
        if let Some(e) = Error::from_code(code, message.as_deref(), what) {
            return Err(e);
        }
        Ok((node, format!("{host}:{port}")))
    }

    /// Asks the cluster for metadata of `topics` (or of no topic, for just the brokers)
    /// and returns the updated snapshot.
    ///
    /// # Errors
    /// [`Error::NoBrokerAvailable`] when no broker answers; other errors as they come.
    pub async fn refresh_metadata(&self, topics: &[&str]) -> Result<Arc<Cluster>> {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(self.inner.config.allow_auto_create_topics);
        self.refresh_with(req, false).await
    }

    /// Refreshes metadata for every topic of the cluster.
    ///
    /// # Errors
    /// As [`Client::refresh_metadata`].
    pub async fn refresh_all_metadata(&self) -> Result<Arc<Cluster>> {
        let req = MetadataRequest::default().with_topics(None);
        self.refresh_with(req, true).await
    }

    async fn refresh_with(&self, req: MetadataRequest, all: bool) -> Result<Arc<Cluster>> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let deadline = Instant::now() + self.inner.config.request_timeout;
        // Its own loop, not `retry`, which refreshes metadata itself.
        let mut delays = Backoff::of(&self.inner.config).delays();
        let resp = loop {
            let attempt = async {
                let conn = self.conn_to_any().await?;
                conn.request(&req).await.map(|(_, r)| r)
            };
            let e = match attempt.await {
                Ok(r) => break r,
                Err(e) => e,
            };
            let wait = delays.next_delay();
            if !e.is_retriable() || Instant::now() + wait >= deadline {
                return Err(e);
            }
            debug!(error = %e, "metadata request failed; retrying");
            tokio::time::sleep(wait).await;
        };
        let merged = Arc::new(self.cluster().merged(&resp, all));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = merged.clone();
        Ok(merged)
    }

    /// Metadata for `topic`, from the cache when it is known and fresh, else asked for.
    pub(crate) async fn topic_metadata(&self, topic: &str) -> Result<Arc<Cluster>> {
        let c = self.cluster();
        if c.topic(topic).is_some() && c.fetched_at.elapsed() < self.inner.config.metadata_max_age {
            return Ok(c);
        }
        let mut c = self.refresh_metadata(&[topic]).await?;
        // A topic being created (we asked, with allow.auto.create.topics) shows up after
        // the broker's controller has made it: ask again, with backoff, until
        // default.api.timeout.ms.
        let deadline = Instant::now() + self.inner.config.default_api_timeout;
        let mut delays = Backoff::of(&self.inner.config).delays();
        while c.topic(topic).is_none() && self.inner.config.allow_auto_create_topics {
            let wait = delays.next_delay();
            if Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
            c = self.refresh_metadata(&[topic]).await?;
        }
        if c.topic(topic).is_none() {
            return Err(Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: None,
            });
        }
        Ok(c)
    }

    /// Runs `op` until it succeeds, fails with an error that is not retriable, or the
    /// deadline or `retries` is reached; waits with exponential backoff (and jitter)
    /// between tries, refreshing the metadata of `topics` after stale-metadata errors.
    pub(crate) async fn retry<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        topics: &[&str],
        op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.retry_when(what, deadline, topics, Error::is_retriable, op)
            .await
    }

    /// As [`Client::retry`], retrying the errors for which `retriable` is true.
    pub(crate) async fn retry_when<T, F, Fut>(
        &self,
        what: &str,
        deadline: Instant,
        topics: &[&str],
        retriable: impl Fn(&Error) -> bool,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let mut delays = Backoff::of(cfg).delays();
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            telemetry::error(what, &cfg.client_id, &err);
            if delays.attempts() >= cfg.retries {
                return Err(err);
            }
            let wait = delays.next_delay();
            if !retriable(&err)
                || Instant::now() + wait >= deadline
                || self.inner.closed.load(Ordering::Acquire)
            {
                return Err(err);
            }
            let attempt = delays.attempts();
            telemetry::retry(what, &cfg.client_id);
            warn!(%what, attempt, error = %err, backoff_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            if err.is_stale_metadata() && !topics.is_empty() {
                if let Err(e) = self.refresh_metadata(topics).await {
                    debug!(error = %e, "metadata refresh failed");
                }
            }
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.config.default_api_timeout
    }

    /// The version of the API with key `api_key` (0 Produce, 1 Fetch, ...: Kafka's
    /// numbers) this client would use with broker `node_id`; `None` when they share
    /// none (or the key is not one Paperboy knows).
    ///
    /// # Errors
    /// When the broker cannot be reached.
    pub async fn negotiated_version(&self, node_id: i32, api_key: i16) -> Result<Option<i16>> {
        let Ok(api) = kafka_protocol::messages::ApiKey::try_from(api_key) else {
            return Ok(None);
        };
        Ok(self.conn_to_node(node_id).await?.versions().negotiate(api))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn acks_parse() {
        assert_eq!("all".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!("0".parse::<Acks>().unwrap(), Acks::None);
        assert!("2".parse::<Acks>().is_err());
    }

    #[test]
    fn client_is_send_sync_clone() {
        fn assert_impls<T: Send + Sync + Clone + 'static>() {}
        assert_impls::<Client>();
    }

    #[tokio::test]
    async fn connect_fails_fast_with_no_broker() {
        // Port 1 on loopback: nothing listens, the connect is refused at once.
        let cfg = ClientConfig::new("127.0.0.1:1").with_request_timeout(Duration::from_millis(300));
        let err = Client::connect(cfg).await.unwrap_err();
        assert!(matches!(err, Error::NoBrokerAvailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
