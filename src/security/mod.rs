//! Secured connections: TLS (rustls with a pure-Rust crypto provider by default) and SASL
//! authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER), configured by the
//! librdkafka/Java property names (see [`SecurityConfig`]).
//!
//! Every connection a client opens (bootstrap, brokers, the group coordinator) goes
//! through the same settings. With SASL, a connection re-authenticates before the session
//! lifetime the broker reports (`connections.max.reauth.ms`, KIP-368) runs out.
//!
//! # Example
//! ```no_run
//! use paperboy::{Client, ClientConfig};
//!
//! # async fn run() -> paperboy::Result<()> {
//! let client = Client::connect(ClientConfig::from_properties([
//!     ("bootstrap.servers", "broker.example.com:9094"),
//!     ("security.protocol", "SASL_SSL"),
//!     ("sasl.mechanism", "SCRAM-SHA-512"),
//!     ("sasl.username", "alice"),
//!     ("sasl.password", "alice-secret"),
//!     ("ssl.ca.location", "/etc/kafka/ca.pem"),
//! ])?)
//! .await?;
//! # Ok(()) }
//! ```

mod config;
mod oauth;
mod rsa_key;
mod sasl;
mod scram;
mod tls;

use std::sync::Arc;

pub use config::{SaslMechanism, SecurityConfig, SecurityProtocol};
pub use oauth::{OAuthToken, TokenError, TokenFuture, TokenProvider};
/// The rustls crate Paperboy's TLS is built on, for
/// [`ClientConfig::with_tls_config`](crate::ClientConfig::with_tls_config).
pub use rustls;
pub use tls::missing_cpu_features;

pub(crate) use sasl::Credentials;
pub(crate) use tls::{explain_io, handshake};

use crate::error::{Error, Result};
use oauth::{TokenCache, UnsecuredJwt};
use scram::Hash;

/// The security settings resolved once per client: the rustls configuration built (CA
/// and key files read, the CPU checked) and the SASL credentials ready.
pub(crate) struct Security {
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) sasl: Option<Credentials>,
}

impl Security {
    #[cfg(test)]
    pub(crate) fn plaintext() -> Security {
        Security {
            tls: None,
            sasl: None,
        }
    }

    pub(crate) fn resolve(cfg: &SecurityConfig) -> Result<Security> {
        cfg.validate()?;
        let tls = if cfg.protocol.uses_tls() {
            Some(tls::client_config(cfg)?)
        } else {
            None
        };
        let sasl = if cfg.protocol.uses_sasl() {
            let user = || cfg.username.clone().unwrap_or_default();
            let password = || cfg.password.clone().unwrap_or_default();
            Some(match cfg.mechanism {
                Some(SaslMechanism::Plain) => Credentials::Plain {
                    user: user(),
                    password: password(),
                },
                Some(SaslMechanism::ScramSha256) => Credentials::Scram {
                    hash: Hash::Sha256,
                    user: user(),
                    password: password(),
                },
                Some(SaslMechanism::ScramSha512) => Credentials::Scram {
                    hash: Hash::Sha512,
                    user: user(),
                    password: password(),
                },
                Some(SaslMechanism::OAuthBearer) => {
                    let provider: Arc<dyn TokenProvider> = match &cfg.token_provider {
                        Some(p) => p.clone(),
                        None => Arc::new(UnsecuredJwt::parse(
                            cfg.oauthbearer_config.as_deref().unwrap_or(""),
                        )?),
                    };
                    Credentials::OAuthBearer {
                        tokens: Arc::new(TokenCache::new(provider)),
                    }
                }
                None => {
                    return Err(Error::Config(crate::ConfigError::Invalid(
                        "SASL needs sasl.mechanism".to_owned(),
                    )))
                }
            })
        } else {
            None
        };
        Ok(Security { tls, sasl })
    }
}
