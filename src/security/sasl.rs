//! The SASL mechanisms as client-side state machines: the first message, then an answer
//! to each server message until the exchange is complete. No I/O here: the connection
//! carries the messages in SaslAuthenticate requests.

use std::sync::Arc;

use super::config::SaslMechanism;
use super::oauth::TokenCache;
use super::scram::{Hash, Scram};

/// The credentials of a connection, resolved from the configuration.
pub(crate) enum Credentials {
    Plain {
        user: String,
        password: String,
    },
    Scram {
        hash: Hash,
        user: String,
        password: String,
    },
    OAuthBearer {
        tokens: Arc<TokenCache>,
    },
}

impl Credentials {
    pub(crate) fn mechanism(&self) -> SaslMechanism {
        match self {
            Credentials::Plain { .. } => SaslMechanism::Plain,
            Credentials::Scram {
                hash: Hash::Sha256, ..
            } => SaslMechanism::ScramSha256,
            Credentials::Scram {
                hash: Hash::Sha512, ..
            } => SaslMechanism::ScramSha512,
            Credentials::OAuthBearer { .. } => SaslMechanism::OAuthBearer,
        }
    }

    /// Starts an exchange: the session and the client's first message.
    pub(crate) async fn start(&self) -> Result<(Session, Vec<u8>), String> {
        match self {
            Credentials::Plain { user, password } => {
                let mut msg = Vec::with_capacity(user.len() + password.len() + 2);
                msg.push(0);
                msg.extend_from_slice(user.as_bytes());
                msg.push(0);
                msg.extend_from_slice(password.as_bytes());
                Ok((Session::OneShot, msg))
            }
            Credentials::Scram {
                hash,
                user,
                password,
            } => {
                let nonce = Scram::random_nonce().map_err(|e| e.0)?;
                let (s, first) = Scram::start(*hash, user, password, nonce).map_err(|e| e.0)?;
                Ok((Session::Scram(Box::new(s)), first))
            }
            Credentials::OAuthBearer { tokens } => {
                let token = tokens
                    .token()
                    .await
                    .map_err(|e| format!("the token provider failed: {e}"))?;
                // RFC 7628: gs2 header, then kvpairs separated by ^A, ending in ^A^A.
                let mut msg = format!("n,,\x01auth=Bearer {}", token.value);
                for (k, v) in &token.extensions {
                    msg.push('\x01');
                    msg.push_str(k);
                    msg.push('=');
                    msg.push_str(v);
                }
                msg.push_str("\x01\x01");
                Ok((Session::OneShot, msg.into_bytes()))
            }
        }
    }
}

/// An exchange under way.
pub(crate) enum Session {
    /// PLAIN and OAUTHBEARER: one message; the broker's answer ends it.
    OneShot,
    Scram(Box<Scram>),
}

impl Session {
    /// Answers the server's message: `Some(next message)`, or `None` when complete.
    pub(crate) fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            Session::OneShot => Ok(None),
            Session::Scram(s) => s.step(server).map_err(|e| e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::oauth::UnsecuredJwt;

    #[tokio::test]
    async fn first_messages() {
        let c = Credentials::Plain {
            user: "alice".into(),
            password: "pw".into(),
        };
        let (mut s, m) = c.start().await.unwrap();
        assert_eq!(m, b"\0alice\0pw");
        assert_eq!(s.step(b"").unwrap(), None);

        let jwt = UnsecuredJwt::parse("principal=bob extension_k=v").unwrap();
        let c = Credentials::OAuthBearer {
            tokens: Arc::new(TokenCache::new(Arc::new(jwt))),
        };
        let (_, m) = c.start().await.unwrap();
        let m = String::from_utf8(m).unwrap();
        assert!(
            m.starts_with("n,,\x01auth=Bearer eyJhbGciOiJub25lIn0."),
            "{m:?}"
        );
        assert!(m.ends_with(".\x01k=v\x01\x01"), "{m:?}");
        assert_eq!(c.mechanism(), SaslMechanism::OAuthBearer);
    }
}
