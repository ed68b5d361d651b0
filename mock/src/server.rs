//! The network side: a listener per node, a task per connection reading size-prefixed
//! request frames, decoding the request header (v1, or v2 for flexible versions),
//! dispatching, and writing the responses in request order.
//!
//! A connection handles one request at a time, as a Kafka broker does (it mutes a
//! connection until the response to its request is sent), so responses are in order and
//! a long-polling Fetch or a JoinGroup waiting for the group holds its connection only.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use paperboy_protocol::frame::{response_header_version, split_frame, DEFAULT_MAX_FRAME_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::faults::RequestRecord;
use crate::handlers::{self, Ctx};
use crate::sasl::SaslConn;
use crate::state::Shared;

/// Accepts connections for node `node` until the task is aborted (which drops, and so
/// aborts, every connection task it spawned).
pub(crate) async fn serve_node(shared: Arc<Shared>, node: i32, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    if !shared.lock().is_up(node) {
                        drop(sock);
                        continue;
                    }
                    let _ = sock.set_nodelay(true);
                    conns.spawn(connection(shared.clone(), node, sock, peer));
                }
                Err(e) => {
                    tracing::warn!(node, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// What to do after a request.
pub(crate) enum Outcome {
    /// Send this encoded body (header added here), after the optional delay.
    Respond(BytesMut, Option<std::time::Duration>),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Send this encoded body, then close the connection (a failed authentication).
    RespondThenClose(BytesMut),
    /// Close the connection.
    Close,
}

async fn connection(shared: Arc<Shared>, node: i32, sock: TcpStream, peer: SocketAddr) {
    let Some(mut kill) = shared.lock().node(node).map(|n| n.kill.subscribe()) else {
        return;
    };
    let (mut rd, mut wr) = sock.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut sasl = SaslConn::default();
    loop {
        let frame = loop {
            match split_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(node, %peer, "bad frame: {e}");
                    return;
                }
            }
            tokio::select! {
                n = rd.read_buf(&mut buf) => match n {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = kill.changed() => return,
            }
        };
        let Some(correlation_id) = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            return;
        };
        let handled = tokio::select! {
            h = handle_frame(&shared, node, peer, &mut sasl, frame) => h,
            _ = kill.changed() => return,
        };
        let (api, version, outcome) = match handled {
            Some(h) => h,
            None => return,
        };
        match outcome {
            Outcome::Close => return,
            Outcome::Silent => {}
            Outcome::RespondThenClose(body) => {
                if let Some(out) = response_frame(correlation_id, api, version, &body) {
                    let _ = wr.write_all(&out).await;
                    let _ = wr.shutdown().await;
                }
                return;
            }
            Outcome::Respond(body, delay) => {
                if let Some(d) = delay {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = kill.changed() => return,
                    }
                }
                let Some(out) = response_frame(correlation_id, api, version, &body) else {
                    return;
                };
                if wr.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn response_frame(correlation_id: i32, api: ApiKey, version: i16, body: &[u8]) -> Option<BytesMut> {
    let hv = response_header_version(api, version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(hv).ok()? + body.len();
    let mut out = BytesMut::with_capacity(4 + size);
    out.put_i32(i32::try_from(size).ok()?);
    header.encode(&mut out, hv).ok()?;
    out.extend_from_slice(body);
    Some(out)
}

/// Decodes and serves one request frame. `None`: close the connection.
async fn handle_frame(
    shared: &Arc<Shared>,
    node: i32,
    peer: SocketAddr,
    sasl: &mut SaslConn,
    mut frame: Bytes,
) -> Option<(ApiKey, i16, Outcome)> {
    if frame.len() < 8 {
        return None;
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Ok(api) = ApiKey::try_from(key) else {
        tracing::debug!(node, key, "unknown API key: closing");
        return None;
    };
    let supported = shared.lock().served(api);
    if api == ApiKey::ApiVersions && supported.is_some_and(|(_, max)| version > max) {
        // KIP-511: answer in v0 with UNSUPPORTED_VERSION and the versions we speak.
        let mut st = shared.lock();
        st.requests.push(RequestRecord {
            node,
            api,
            version,
            at: std::time::Instant::now(),
        });
        let body = handlers::metadata::api_versions_unsupported(&st.served_all());
        return Some((api, 0, Outcome::Respond(body, None)));
    }
    let Some((min, max)) = supported else {
        tracing::debug!(node, ?api, "API not served: closing");
        return None;
    };
    if version < min || version > max {
        tracing::debug!(node, ?api, version, "version not served: closing");
        return None;
    }
    let header = RequestHeader::decode(&mut frame, api.request_header_version(version)).ok()?;
    let (faults, latency, users) = {
        let mut st = shared.lock();
        st.requests.push(RequestRecord {
            node,
            api,
            version,
            at: std::time::Instant::now(),
        });
        let latency = st.node(node).filter(|n| n.up)?.latency;
        (st.faults.for_request(api, node), latency, st.sasl.clone())
    };
    if faults.disconnect {
        return None;
    }
    if matches!(api, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) {
        let step = if api == ApiKey::SaslHandshake {
            crate::sasl::handshake(&users, sasl, version, frame)
        } else {
            crate::sasl::authenticate(&users, sasl, version, frame)
        };
        let outcome = match step {
            Ok(o) if o.close => Outcome::RespondThenClose(o.body),
            Ok(o) => Outcome::Respond(o.body, None),
            Err(e) => {
                tracing::debug!(node, ?api, "closing the connection: {e}");
                Outcome::Close
            }
        };
        return Some((api, version, outcome));
    }
    if users.required() && !matches!(sasl, SaslConn::Done) && api != ApiKey::ApiVersions {
        tracing::debug!(node, ?api, "request before authentication: closing");
        return None;
    }
    let delay = Some(faults.delay.unwrap_or_default() + latency).filter(|d| !d.is_zero());
    let mut ctx = Ctx {
        shared: shared.clone(),
        node,
        version,
        client_id: header
            .client_id
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        client_host: format!("/{}", peer.ip()),
        faults,
    };
    let outcome = match handlers::dispatch(&mut ctx, api, frame).await {
        Ok(Some(body)) => Outcome::Respond(body, delay),
        Ok(None) => Outcome::Silent,
        Err(e) => {
            tracing::warn!(node, ?api, version, "closing the connection: {e}");
            Outcome::Close
        }
    };
    shared.lock().faults.finish(ctx.faults.applied());
    shared.changed.send_modify(|g| *g += 1);
    Some((api, version, outcome))
}
