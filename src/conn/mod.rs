//! One TCP connection to one broker.
//!
//! ```text
//!  request() ──frame──▶ mpsc ──▶ writer task ──▶ socket
//!      ▲                                           │
//!      └── oneshot ◀── pending[correlation id] ◀── reader task
//! ```
//!
//! Requests are pipelined: any number may be in flight, each waits on its own oneshot. The
//! reader task routes each response frame by its correlation id. When the socket fails or
//! the peer hangs up, the connection is *poisoned*: every request in flight, and every
//! later one, fails with [`Error::Disconnected`], and the pool opens a new connection.
//! A request that times out removes itself from the pending map (a drop guard), so a late
//! answer is dropped, not misrouted.
//!
//! With TLS the socket is wrapped by rustls before anything is sent; with SASL the
//! connection authenticates right after ApiVersions and, when the broker reports a session
//! lifetime, again before it runs out ([`auth`]): the writer then holds back every other
//! request until the exchange is over, as the broker requires.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::{Request, StrBytes};
use paperboy_protocol::frame::{self, api_key_of};
use paperboy_protocol::versions::ApiVersions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn, Instrument};

use crate::config::{parse_host_port, ClientConfig};
use crate::error::{Error, Result};
use crate::security::{self, Security};
use crate::telemetry;

mod auth;

/// A poison reason that starts with this is a TLS failure ([`Error::Tls`] at connect).
const TLS_FAULT: &str = "TLS: ";

/// What every connection of a client is opened with.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) client_id: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) security: Arc<Security>,
}

impl Dialer {
    /// The dialer for `config`: TLS configuration built and SASL credentials resolved.
    pub(crate) fn new(config: &ClientConfig) -> Result<Dialer> {
        Ok(Dialer {
            client_id: config.client_id.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_response_bytes: config.max_response_bytes,
            security: Arc::new(Security::resolve(&config.security)?),
        })
    }
}

type Reply = oneshot::Sender<Result<Bytes>>;

/// Requests in flight, by correlation id. Guarded by its own mutex, held only to insert or
/// remove one entry.
#[derive(Default)]
struct Pending {
    replies: HashMap<i32, Reply>,
    /// Requests whose callers stopped waiting (timeout, cancel): their answers may still
    /// come, and are dropped. Any other correlation id is a protocol error.
    abandoned: HashSet<i32>,
    /// Set once the connection is poisoned; later requests fail at once with it.
    closed: Option<String>,
}

struct Shared {
    addr: String,
    pending: Mutex<Pending>,
    poisoned: AtomicBool,
    /// Connects, disconnects and request durations (feature `metrics`).
    metrics: telemetry::Conn,
}

impl Shared {
    /// Fails everything in flight and marks the connection unusable.
    fn poison(&self, reason: String) {
        let replies = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.closed.is_none() {
                p.closed = Some(reason.clone());
            }
            std::mem::take(&mut p.replies)
        };
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            self.metrics.disconnected();
            debug!(broker = %self.addr, %reason, in_flight = replies.len(), "connection closed");
        }
        for (_, tx) in replies {
            let _ = tx.send(Err(self.disconnected(&reason)));
        }
    }

    fn disconnected(&self, reason: &str) -> Error {
        Error::Disconnected {
            broker: self.addr.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// What the writer is told besides the frames of ordinary requests.
enum AuthCmd {
    /// Write nothing of the ordinary queue until `Resume`; answer once everything taken
    /// from it so far is written.
    Pause(oneshot::Sender<()>),
    /// A frame of the SASL exchange, written even while paused.
    Frame(Bytes),
    Resume,
}

/// The sending side of a connection, shared by its users and its re-authentication task.
struct Link {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    auth_tx: mpsc::Sender<AuthCmd>,
    client_id: String,
    next_correlation_id: AtomicI32,
}

/// A live connection to a broker, with the API versions negotiated on it.
pub(crate) struct Connection {
    link: Arc<Link>,
    versions: ApiVersions,
    request_timeout: Duration,
    reader: tokio::task::JoinHandle<()>,
    reauth: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(r) = &self.reauth {
            r.abort();
        }
        self.link.shared.poison("connection dropped".to_owned());
    }
}

impl Connection {
    /// Connects to `addr`, sets up TLS, negotiates API versions, authenticates, and starts
    /// the reader and writer tasks.
    ///
    /// The whole of it must finish within `socket.connection.setup.timeout.ms`. TLS and
    /// SASL failures are [`Error::Tls`] and [`Error::Authentication`], not retriable.
    pub(crate) async fn connect(addr: &str, dialer: &Dialer) -> Result<Connection> {
        let span = tracing::debug_span!("connect", broker = %addr);
        let fut = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| Error::Io {
                broker: addr.to_owned(),
                source: std::sync::Arc::new(e),
            })?;
            tcp.set_nodelay(true).ok();
            let mut conn = match &dialer.security.tls {
                None => {
                    let (rd, wr) = tcp.into_split();
                    Connection::start(addr, dialer, rd, wr, None)
                }
                Some(tls) => {
                    let host = parse_host_port(addr).map_or(addr, |(h, _)| h);
                    let stream = security::handshake(tls.clone(), addr, host, tcp).await?;
                    let (rd, wr) = tokio::io::split(stream);
                    Connection::start(addr, dialer, rd, wr, Some(host.to_owned()))
                }
            };
            conn.versions = conn
                .negotiate_versions()
                .await
                .map_err(|e| first_answer_error(e, dialer))?;
            if let Some(credentials) = &dialer.security.sasl {
                let lifetime = auth::authenticate(
                    &conn.link,
                    &conn.versions,
                    credentials,
                    dialer.request_timeout,
                )
                .await
                .map_err(|e| first_answer_error(e, dialer))?;
                if let Some(lifetime) = lifetime {
                    conn.reauth = Some(tokio::spawn(auth::reauthenticate(
                        conn.link.clone(),
                        conn.versions.clone(),
                        dialer.security.clone(),
                        lifetime,
                        dialer.request_timeout,
                    )));
                }
            }
            Ok(conn)
        };
        let result = match tokio::time::timeout(dialer.connect_timeout, fut.instrument(span)).await
        {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: format!("connecting to {addr}"),
                after: dialer.connect_timeout,
            }),
        };
        match &result {
            Ok(conn) => conn.link.shared.metrics.connected(),
            Err(e) => telemetry::Conn::new(addr, &dialer.client_id).connect_failed(e),
        }
        result
    }

    /// Starts the reader and writer tasks on an established stream.
    fn start<R, W>(
        addr: &str,
        dialer: &Dialer,
        rd: R,
        wr: W,
        tls_host: Option<String>,
    ) -> Connection
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            pending: Mutex::new(Pending::default()),
            poisoned: AtomicBool::new(false),
            metrics: telemetry::Conn::new(addr, &dialer.client_id),
        });
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let (auth_tx, auth_rx) = mpsc::channel::<AuthCmd>(4);
        tokio::spawn(write_loop(shared.clone(), wr, rx, auth_rx));
        let reader = tokio::spawn(read_loop(
            shared.clone(),
            rd,
            dialer.max_response_bytes,
            tls_host,
        ));
        Connection {
            link: Arc::new(Link {
                shared,
                tx,
                auth_tx,
                client_id: dialer.client_id.clone(),
                next_correlation_id: AtomicI32::new(0),
            }),
            versions: ApiVersions::default(),
            request_timeout: dialer.request_timeout,
            reader,
            reauth: None,
        }
    }

    /// ApiVersions at v3 (with our name and version, KIP-511); a broker too old for v3
    /// answers UNSUPPORTED_VERSION with its own range, and v0 is tried.
    async fn negotiate_versions(&self) -> Result<ApiVersions> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("paperboy"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut resp = self.request_at(&req, 3, self.request_timeout).await?;
        if resp.error_code == 35 {
            // UNSUPPORTED_VERSION: retry at v0, which every broker answers.
            resp = self
                .request_at(&ApiVersionsRequest::default(), 0, self.request_timeout)
                .await?;
        }
        if let Some(e) = Error::from_code(resp.error_code, None, || {
            format!("ApiVersions from {}", self.link.shared.addr)
        }) {
            return Err(e);
        }
        let versions = ApiVersions::from_response(&resp);
        debug!(
            broker = %self.link.shared.addr,
            produce = ?versions.negotiate(ApiKey::Produce),
            fetch = ?versions.negotiate(ApiKey::Fetch),
            metadata = ?versions.negotiate(ApiKey::Metadata),
            "negotiated API versions"
        );
        Ok(versions)
    }

    /// Closes the connection: requests in flight fail, and the pool opens a new one.
    pub(crate) fn close(&self, reason: &str) {
        self.link.shared.poison(reason.to_owned());
    }

    /// Whether the connection is broken and must be replaced.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.link.shared.poisoned.load(Ordering::Acquire)
    }

    /// The versions negotiated with this broker.
    pub(crate) fn versions(&self) -> &ApiVersions {
        &self.versions
    }

    /// The version to use for `R` on this connection.
    pub(crate) fn version_for<R: Request>(&self) -> Result<i16> {
        negotiated::<R>(&self.versions).ok_or_else(|| Error::UnsupportedVersion {
            broker: self.link.shared.addr.clone(),
            api: format!("{:?}", api_key_of::<R>()),
        })
    }

    /// Sends `req` at the negotiated version and waits for the answer.
    pub(crate) async fn request<R: Request>(&self, req: &R) -> Result<(i16, R::Response)> {
        let version = self.version_for::<R>()?;
        let resp = self.request_at(req, version, self.request_timeout).await?;
        Ok((version, resp))
    }

    /// Sends `req` at `version` and waits up to `timeout` for the answer.
    pub(crate) async fn request_at<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response> {
        self.request_with(req, version, timeout, || {}).await
    }

    /// As [`Connection::request_at`], calling `written` as soon as the request is queued
    /// for the socket (requests are written in the order they are queued), before the
    /// answer arrives.
    pub(crate) async fn request_with<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        written: impl FnOnce(),
    ) -> Result<R::Response> {
        self.link.call(req, version, timeout, false, written).await
    }

    /// Sends `req` at `version` without waiting for an answer (Produce with acks=0, whose
    /// requests the broker never answers).
    pub(crate) async fn send_no_response<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        self.link
            .send_frame(req, version, false, false)
            .await
            .map(|_| ())
    }
}

impl Link {
    /// Sends `req` at `version` and waits up to `timeout` for the answer; `sasl` sends it
    /// past a paused writer (the frames of a SASL exchange). Its duration is recorded
    /// (`messaging.client.operation.duration`, feature `metrics`).
    async fn call<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        sasl: bool,
        written: impl FnOnce(),
    ) -> Result<R::Response> {
        let start = telemetry::Start::now();
        let result = self.exchange(req, version, timeout, sasl, written).await;
        self.shared
            .metrics
            .request(api_key_of::<R>(), start, result.as_ref().err());
        result
    }

    /// [`Link::call`] without the measurement.
    async fn exchange<R: Request>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        sasl: bool,
        written: impl FnOnce(),
    ) -> Result<R::Response> {
        let api = api_key_of::<R>();
        let sent = self.send_frame(req, version, true, sasl).await;
        written();
        let (correlation_id, reply) = sent?;
        let (rx, guard) = reply.expect("a reply channel was asked for");
        let frame = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(self.shared.disconnected("reader stopped")),
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("{api:?} request to {}", self.shared.addr),
                    after: timeout,
                })
            }
        };
        drop(guard);
        let (header, body) = frame::decode_response::<R>(frame, version).map_err(|source| {
            // A response we cannot read leaves the stream in doubt: drop the connection.
            self.shared.poison(format!("undecodable {api:?} response"));
            Error::Protocol {
                broker: self.shared.addr.clone(),
                source,
            }
        })?;
        debug_assert_eq!(header.correlation_id, correlation_id);
        Ok(body)
    }

    async fn send_frame<R: Request>(
        &self,
        req: &R,
        version: i16,
        expect_reply: bool,
        sasl: bool,
    ) -> Result<(
        i32,
        Option<(oneshot::Receiver<Result<Bytes>>, PendingGuard<'_>)>,
    )> {
        let correlation_id = self
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            & i32::MAX;
        let mut buf = BytesMut::new();
        frame::encode_request(
            &mut buf,
            correlation_id,
            Some(&self.client_id),
            version,
            req,
        )
        .map_err(|source| Error::Protocol {
            broker: self.shared.addr.clone(),
            source,
        })?;
        let rx = if expect_reply {
            let (tx, rx) = oneshot::channel();
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = &p.closed {
                return Err(self.shared.disconnected(reason));
            }
            p.replies.insert(correlation_id, tx);
            // From here on the entry goes when the caller stops waiting, even if that is
            // before the frame is queued (a caller dropped at its deadline).
            Some((
                rx,
                PendingGuard {
                    shared: &self.shared,
                    correlation_id,
                },
            ))
        } else {
            None
        };
        trace!(broker = %self.shared.addr, api = ?api_key_of::<R>(), version, correlation_id, bytes = buf.len(), "send");
        let queued = if sasl {
            self.auth_tx
                .send(AuthCmd::Frame(buf.freeze()))
                .await
                .is_ok()
        } else {
            self.tx.send(buf.freeze()).await.is_ok()
        };
        if !queued {
            let reason = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .closed
                .clone()
                .unwrap_or_else(|| "writer stopped".to_owned());
            self.shared.poison(reason.clone());
            return Err(self.shared.disconnected(&reason));
        }
        Ok((correlation_id, rx))
    }
}

/// The version of `R` to send to a broker with `versions`. The API key's range can be
/// wider than what the request type encodes (OffsetFetch v10 in kafka-protocol 0.18):
/// never pick beyond the type's own range.
fn negotiated<R: Request>(versions: &ApiVersions) -> Option<i16> {
    versions
        .negotiate(api_key_of::<R>())
        .map(|v| v.min(R::VERSIONS.max))
        .filter(|v| *v >= R::VERSIONS.min)
}

/// An error of the first exchanges on a connection, made to say what to check: a TLS
/// failure seen by the reader becomes [`Error::Tls`]; a plaintext connection the broker
/// hangs up on at once probably reached a TLS or SASL listener.
fn first_answer_error(e: Error, dialer: &Dialer) -> Error {
    match e {
        Error::Disconnected { broker, reason } => {
            if let Some(message) = reason.strip_prefix(TLS_FAULT) {
                Error::Tls {
                    broker,
                    message: message.to_owned(),
                }
            } else if dialer.security.tls.is_none() && reason == "closed by broker" {
                Error::Disconnected {
                    broker,
                    reason: format!(
                        "{reason} before answering: if the listener uses TLS, set security.protocol=SSL or SASL_SSL"
                    ),
                }
            } else {
                Error::Disconnected { broker, reason }
            }
        }
        other => other,
    }
}

/// Removes a request's pending entry when its caller stops waiting (timeout or cancel).
struct PendingGuard<'a> {
    shared: &'a Shared,
    correlation_id: i32,
}

/// Abandoned requests a connection keeps track of before it gives up on the broker.
const MAX_ABANDONED: usize = 4096;

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.replies.remove(&self.correlation_id).is_some() {
            p.abandoned.insert(self.correlation_id);
            if p.abandoned.len() > MAX_ABANDONED {
                drop(p);
                self.shared.poison(format!(
                    "{MAX_ABANDONED} requests went unanswered: the broker is not keeping up"
                ));
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    mut auth_rx: mpsc::Receiver<AuthCmd>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut paused = false;
    let mut auth_open = true;
    loop {
        tokio::select! {
            biased;
            cmd = auth_rx.recv(), if auth_open => match cmd {
                Some(AuthCmd::Pause(ack)) => {
                    paused = true;
                    let _ = ack.send(());
                }
                Some(AuthCmd::Resume) => paused = false,
                Some(AuthCmd::Frame(b)) => batch.push(b),
                None => {
                    auth_open = false;
                    paused = false;
                }
            },
            first = rx.recv(), if !paused => match first {
                Some(first) => {
                    batch.push(first);
                    // Gather what else is queued so one flush carries several requests.
                    while batch.len() < 64 {
                        match rx.try_recv() {
                            Ok(b) => batch.push(b),
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            else => break,
        }
        if batch.is_empty() {
            continue;
        }
        for b in batch.drain(..) {
            if let Err(e) = wr.write_all(&b).await {
                shared.poison(format!("write failed: {e}"));
                return;
            }
        }
        // TLS buffers what it encrypts; a plain socket flushes at no cost.
        if let Err(e) = wr.flush().await {
            shared.poison(format!("write failed: {e}"));
            return;
        }
        if shared.poisoned.load(Ordering::Acquire) {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut rd: R,
    max_frame: usize,
    tls_host: Option<String>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match frame::split_frame(&mut buf, max_frame) {
                Ok(Some(f)) => {
                    let Some(id) = frame::peek_correlation_id(&f) else {
                        shared.poison("response shorter than its header".to_owned());
                        return;
                    };
                    let (tx, late) = {
                        let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                        let tx = p.replies.remove(&id);
                        let late = tx.is_none() && p.abandoned.remove(&id);
                        (tx, late)
                    };
                    match tx {
                        Some(tx) => {
                            let _ = tx.send(Ok(f));
                        }
                        None if late => {
                            trace!(broker = %shared.addr, correlation_id = id, "late response dropped")
                        }
                        None => {
                            warn!(broker = %shared.addr, correlation_id = id, "response to a request never sent");
                            shared.poison(format!(
                                "protocol error: a response with correlation id {id}, which no request in flight has"
                            ));
                            return;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if tls_host.is_none() && looks_like_tls(&buf) {
                        shared.poison(format!(
                            "{TLS_FAULT}the listener speaks TLS and this client does not: set security.protocol=SSL or SASL_SSL"
                        ));
                        return;
                    }
                    warn!(broker = %shared.addr, error = %e, "bad frame from broker");
                    shared.poison(format!("bad frame: {e}"));
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                shared.poison("closed by broker".to_owned());
                return;
            }
            Ok(_) => {}
            Err(e) => {
                match &tls_host {
                    Some(host)
                        if e.get_ref()
                            .is_some_and(|i| i.is::<security::rustls::Error>()) =>
                    {
                        shared.poison(format!("{TLS_FAULT}{}", security::explain_io(&e, host)))
                    }
                    _ => shared.poison(format!("read failed: {e}")),
                }
                return;
            }
        }
    }
}

/// Whether `buf` starts with a TLS record header (alert or handshake, TLS 1.0-1.3): what a
/// TLS listener sends a plaintext client.
fn looks_like_tls(buf: &[u8]) -> bool {
    buf.len() >= 3 && matches!(buf[0], 0x15 | 0x16) && buf[1] == 0x03 && buf[2] <= 0x04
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};
    use tokio::net::TcpListener;

    /// Reads one request frame; returns its header and body bytes.
    async fn read_request(sock: &mut TcpStream) -> Option<(RequestHeader, Bytes)> {
        let mut len = [0u8; 4];
        sock.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; i32::from_be_bytes(len) as usize];
        sock.read_exact(&mut buf).await.ok()?;
        let mut b = Bytes::from(buf);
        let key = ApiKey::try_from(i16::from_be_bytes([b[0], b[1]])).unwrap();
        let version = i16::from_be_bytes([b[2], b[3]]);
        let header = RequestHeader::decode(&mut b, key.request_header_version(version)).unwrap();
        Some((header, b))
    }

    async fn write_response<R: Encodable>(
        sock: &mut TcpStream,
        correlation_id: i32,
        header_version: i16,
        body: &R,
        version: i16,
    ) {
        let mut out = BytesMut::new();
        let h = ResponseHeader::default().with_correlation_id(correlation_id);
        let size = h.compute_size(header_version).unwrap() + body.compute_size(version).unwrap();
        out.extend_from_slice(&(size as i32).to_be_bytes());
        h.encode(&mut out, header_version).unwrap();
        body.encode(&mut out, version).unwrap();
        sock.write_all(&out).await.unwrap();
    }

    /// A scripted peer: answers ApiVersions, then collects `n` Metadata requests and
    /// answers them in reverse order, each with its correlation id as controller id.
    async fn reversing_peer(n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (h, _) = read_request(&mut sock).await.unwrap();
            assert_eq!(h.request_api_key, ApiKey::ApiVersions as i16);
            let resp = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_max_version(3),
                ApiVersion::default()
                    .with_api_key(ApiKey::Metadata as i16)
                    .with_max_version(12),
            ]);
            write_response(&mut sock, h.correlation_id, 0, &resp, h.request_api_version).await;
            let mut held = Vec::new();
            while held.len() < n {
                held.push(read_request(&mut sock).await.unwrap().0);
            }
            for h in held.into_iter().rev() {
                let body = MetadataResponse::default()
                    .with_controller_id(kafka_protocol::messages::BrokerId(h.correlation_id));
                write_response(&mut sock, h.correlation_id, 1, &body, 12).await;
            }
            // Then hang up.
        });
        addr
    }

    async fn connect(addr: &str, timeout: Duration) -> Connection {
        let dialer = Dialer {
            client_id: "test".to_owned(),
            connect_timeout: timeout,
            request_timeout: timeout,
            max_response_bytes: 1 << 20,
            security: Arc::new(Security::plaintext()),
        };
        Connection::connect(addr, &dialer).await.unwrap()
    }

    #[tokio::test]
    async fn pipelined_answers_are_routed_by_correlation_id() {
        let addr = reversing_peer(8).await;
        let conn = Arc::new(connect(&addr, Duration::from_secs(5)).await);
        assert_eq!(conn.versions().negotiate(ApiKey::Metadata), Some(12));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let c = conn.clone();
                tokio::spawn(async move {
                    let (v, resp) = c.request(&MetadataRequest::default()).await.unwrap();
                    assert_eq!(v, 12);
                    resp.controller_id.0
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8, "each request got its own answer: {ids:?}");
        // The peer hung up after answering: the connection is poisoned, typed error.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(conn.is_poisoned());
        let err = conn.request(&MetadataRequest::default()).await.unwrap_err();
        assert!(matches!(err, Error::Disconnected { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_timed_out_request_leaves_no_pending_entry() {
        // The peer waits for two requests before answering; the first caller gives up.
        let addr = reversing_peer(2).await;
        let conn = connect(&addr, Duration::from_secs(5)).await;
        let v = conn.version_for::<MetadataRequest>().unwrap();
        let err = conn
            .request_at(&MetadataRequest::default(), v, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(conn.link.shared.pending.lock().unwrap().replies.is_empty());
        // The second request is answered; the late answer to the first is dropped.
        let resp = conn
            .request_at(&MetadataRequest::default(), v, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            resp.controller_id.0, 3,
            "answered with its own correlation id"
        );
    }

    #[tokio::test]
    async fn unsupported_api_is_a_typed_error() {
        let addr = reversing_peer(0).await;
        let conn = connect(&addr, Duration::from_secs(5)).await;
        let err = conn
            .request(&kafka_protocol::messages::ProduceRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::UnsupportedVersion { ref api, .. } if api == "Produce"
            ),
            "{err}"
        );
    }
}
