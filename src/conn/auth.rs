//! SASL on a connection: SaslHandshake, then SaslAuthenticate rounds carrying the
//! mechanism's messages; and re-authentication (KIP-368) before the session lifetime the
//! broker reported runs out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use paperboy_protocol::versions::ApiVersions;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{negotiated, AuthCmd, Link};
use crate::error::{Error, KafkaCode, Result};
use crate::security::{Credentials, Security};

/// Authenticates the connection; returns the session lifetime the broker set, if any.
pub(super) async fn authenticate(
    link: &Link,
    versions: &ApiVersions,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Option<Duration>> {
    let mechanism = credentials.mechanism().name();
    let fail = |message: String| Error::Authentication {
        broker: link.shared.addr.clone(),
        mechanism: mechanism.to_owned(),
        message,
    };
    let (Some(hs_version), Some(auth_version)) = (
        // v1: the tokens travel in SaslAuthenticate, not raw on the socket.
        negotiated::<SaslHandshakeRequest>(versions).filter(|v| *v >= 1),
        negotiated::<SaslAuthenticateRequest>(versions),
    ) else {
        return Err(fail(
            "the broker offers no SaslHandshake v1 and SaslAuthenticate (Kafka 1.0 or later is needed)".to_owned(),
        ));
    };
    let hs: SaslHandshakeResponse = link
        .call(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            hs_version,
            timeout,
            true,
            || {},
        )
        .await?;
    match KafkaCode::try_from_code(hs.error_code) {
        None => {}
        Some(KafkaCode::UnsupportedSaslMechanism) => {
            let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(fail(format!(
                "the listener does not enable {mechanism}; it enables: {} (set sasl.mechanism to one of them)",
                if enabled.is_empty() { "none".to_owned() } else { enabled.join(", ") }
            )));
        }
        Some(KafkaCode::IllegalSaslState) => {
            return Err(fail(
                "the broker does not expect SASL on this listener (ILLEGAL_SASL_STATE): check security.protocol (PLAINTEXT or SSL for a listener without SASL)".to_owned(),
            ))
        }
        Some(code) => return Err(fail(format!("SaslHandshake failed: {code}"))),
    }
    let (mut session, mut message) = credentials.start().await.map_err(fail)?;
    loop {
        let resp: SaslAuthenticateResponse = link
            .call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message)),
                auth_version,
                timeout,
                true,
                || {},
            )
            .await?;
        if resp.error_code != 0 {
            let code = KafkaCode::try_from_code(resp.error_code)
                .unwrap_or(KafkaCode::Unknown(resp.error_code));
            let said = resp
                .error_message
                .as_ref()
                .map(|m| m.to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| code.to_string());
            let hint = if credentials.mechanism() == crate::security::SaslMechanism::OAuthBearer {
                "check the token (its principal, expiry and signature)"
            } else {
                "check sasl.username and sasl.password"
            };
            return Err(fail(format!("the broker refused: {said} ({hint})")));
        }
        let lifetime = resp.session_lifetime_ms;
        match session.step(&resp.auth_bytes).map_err(fail)? {
            Some(next) => message = next,
            None => {
                debug!(broker = %link.shared.addr, mechanism, lifetime_ms = lifetime, "authenticated");
                return Ok((lifetime > 0).then(|| Duration::from_millis(lifetime as u64)));
            }
        }
    }
}

/// When to re-authenticate a session of `lifetime`: at a random point between 85% and
/// 95% of it, as the Java client does, so connections opened together do not all pause
/// at once.
pub(super) fn reauth_delay(lifetime: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    lifetime.mul_f64(0.85 + 0.10 * r)
}

/// Re-authenticates `link` before each session lifetime runs out: pauses the writer
/// (requests already written are answered first, later ones wait), runs the exchange,
/// resumes. A failure poisons the connection: its requests fail with
/// [`Error::Disconnected`] naming the cause, and the pool opens a new one.
pub(super) async fn reauthenticate(
    link: Arc<Link>,
    versions: ApiVersions,
    security: Arc<Security>,
    mut lifetime: Duration,
    timeout: Duration,
) {
    let Some(credentials) = &security.sasl else {
        return;
    };
    loop {
        tokio::time::sleep(reauth_delay(lifetime)).await;
        if link
            .shared
            .poisoned
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let (ack, paused) = oneshot::channel();
        if link.auth_tx.send(AuthCmd::Pause(ack)).await.is_err() || paused.await.is_err() {
            return;
        }
        let result = authenticate(&link, &versions, credentials, timeout).await;
        let _ = link.auth_tx.send(AuthCmd::Resume).await;
        match result {
            Ok(Some(next)) => {
                debug!(broker = %link.shared.addr, lifetime_ms = next.as_millis() as u64, "re-authenticated");
                lifetime = next;
            }
            Ok(None) => return,
            Err(e) => {
                warn!(broker = %link.shared.addr, error = %e, "re-authentication failed");
                link.shared.poison(format!("re-authentication failed: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reauth_comes_between_85_and_95_percent_of_the_lifetime() {
        for _ in 0..200 {
            let d = reauth_delay(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(85) && d <= Duration::from_secs(95),
                "{d:?}"
            );
        }
    }
}
