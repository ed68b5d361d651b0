//! The security settings, by their librdkafka/Java property names.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{invalid, parse_bool};
use crate::error::ConfigError;

use super::oauth::{TokenProvider, UnsecuredJwt};

/// How connections to brokers are secured (`security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS; with a client certificate when one is configured (mTLS).
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The name Kafka uses (`SASL_SSL`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl std::str::FromStr for SecurityProtocol {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            _ => Err(invalid(
                "security.protocol",
                s,
                "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            )),
        }
    }
}

/// A SASL mechanism (`sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password, sent as they are (use it over TLS).
    Plain,
    /// `SCRAM-SHA-256` (RFC 5802/7677): the password never crosses the wire.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// `OAUTHBEARER` (KIP-255, RFC 7628): a token from a [`TokenProvider`].
    OAuthBearer,
}

impl SaslMechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            "OAUTHBEARER" => Ok(SaslMechanism::OAuthBearer),
            "GSSAPI" => Err(invalid(
                "sasl.mechanism",
                s,
                "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (GSSAPI/Kerberos is not supported)",
            )),
            _ => Err(invalid(
                "sasl.mechanism",
                s,
                "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
            )),
        }
    }
}

/// Where a PEM item comes from: a file, or the PEM text itself.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    /// What to call it in an error message (never the PEM text: it may be a key).
    pub(crate) fn describe(&self, key_name: &str) -> String {
        match self {
            Pem::File(p) => format!("{key_name} `{}`", p.display()),
            Pem::Inline(_) => format!("{key_name} (inline PEM)"),
        }
    }

    pub(crate) fn read(&self, key_name: &str) -> Result<Vec<u8>, ConfigError> {
        match self {
            Pem::Inline(s) => Ok(s.as_bytes().to_vec()),
            Pem::File(p) => std::fs::read(p).map_err(|e| {
                ConfigError::Invalid(format!("cannot read {}: {e}", self.describe(key_name)))
            }),
        }
    }
}

/// The TLS and SASL settings of a client.
///
/// | property | default | meaning |
/// |---|---|---|
/// | `security.protocol` | `PLAINTEXT` | `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` |
/// | `ssl.ca.location` | system roots | PEM file of the CA certificates to trust |
/// | `ssl.ca.pem` | | the same, as PEM text |
/// | `ssl.certificate.location` / `ssl.certificate.pem` | | client certificate chain (mTLS) |
/// | `ssl.key.location` / `ssl.key.pem` | | its private key (PKCS#8, PKCS#1 or SEC1 PEM) |
/// | `ssl.key.password` | | password of an encrypted PKCS#8 key |
/// | `ssl.endpoint.identification.algorithm` | `https` | `https` checks the broker's name against its certificate; `none` does not |
/// | `sasl.mechanism` (`sasl.mechanisms`) | | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` |
/// | `sasl.username`, `sasl.password` | | credentials for PLAIN and SCRAM |
/// | `sasl.jaas.config` | | Java's form: `username="..."` and `password="..."` are taken from it |
/// | `enable.sasl.oauthbearer.unsecure.jwt` | `false` | OAUTHBEARER with an unsigned JWT made here (tests only) |
/// | `sasl.oauthbearer.config` | | for the unsecured JWT: `principal=... [lifeSeconds=...] [scope=a,b] [extension_NAME=value]` |
#[derive(Clone)]
pub struct SecurityConfig {
    pub(crate) protocol: SecurityProtocol,
    pub(crate) ca: Option<Pem>,
    pub(crate) certificate: Option<Pem>,
    pub(crate) key: Option<Pem>,
    pub(crate) key_password: Option<String>,
    pub(crate) verify_hostname: bool,
    pub(crate) tls_config: Option<Arc<rustls::ClientConfig>>,
    pub(crate) mechanism: Option<SaslMechanism>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) unsecure_jwt: bool,
    pub(crate) oauthbearer_config: Option<String>,
    pub(crate) token_provider: Option<Arc<dyn TokenProvider>>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            protocol: SecurityProtocol::Plaintext,
            ca: None,
            certificate: None,
            key: None,
            key_password: None,
            verify_hostname: true,
            tls_config: None,
            mechanism: None,
            username: None,
            password: None,
            unsecure_jwt: false,
            oauthbearer_config: None,
            token_provider: None,
        }
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pem = |p: &Option<Pem>| match p {
            None => "none".to_owned(),
            Some(Pem::File(path)) => path.display().to_string(),
            Some(Pem::Inline(_)) => "(inline PEM)".to_owned(),
        };
        f.debug_struct("SecurityConfig")
            .field("protocol", &self.protocol)
            .field("ca", &pem(&self.ca))
            .field("certificate", &pem(&self.certificate))
            .field(
                "key",
                &match &self.key {
                    Some(Pem::Inline(_)) => REDACTED.to_owned(),
                    other => pem(other),
                },
            )
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| REDACTED),
            )
            .field("verify_hostname", &self.verify_hostname)
            .field("tls_config", &self.tls_config.as_ref().map(|_| "(given)"))
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("unsecure_jwt", &self.unsecure_jwt)
            .field(
                "oauthbearer_config",
                &self.oauthbearer_config.as_ref().map(|_| REDACTED),
            )
            .field(
                "token_provider",
                &self.token_provider.as_ref().map(|_| "(given)"),
            )
            .finish()
    }
}

impl SecurityConfig {
    /// The security protocol.
    pub fn protocol(&self) -> SecurityProtocol {
        self.protocol
    }

    /// The SASL mechanism, when one is set.
    pub fn mechanism(&self) -> Option<SaslMechanism> {
        self.mechanism
    }

    /// Sets `key` if it is a security property; `Ok(false)` if it is not one.
    pub(crate) fn try_set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        let path = |v: &str| Some(Pem::File(PathBuf::from(v.trim())));
        match key {
            "security.protocol" => self.protocol = value.parse()?,
            "ssl.ca.location" => self.ca = path(value),
            "ssl.ca.pem" => self.ca = Some(Pem::Inline(value.to_owned())),
            "ssl.certificate.location" => self.certificate = path(value),
            "ssl.certificate.pem" => self.certificate = Some(Pem::Inline(value.to_owned())),
            "ssl.key.location" => self.key = path(value),
            "ssl.key.pem" => self.key = Some(Pem::Inline(value.to_owned())),
            "ssl.key.password" => self.key_password = Some(value.to_owned()),
            "ssl.endpoint.identification.algorithm" => {
                self.verify_hostname = match value.trim().to_ascii_lowercase().as_str() {
                    "https" => true,
                    "none" | "" => false,
                    _ => return Err(invalid(key, value, "https or none")),
                }
            }
            "sasl.mechanism" | "sasl.mechanisms" => self.mechanism = Some(value.parse()?),
            "sasl.username" => self.username = Some(value.to_owned()),
            "sasl.password" => self.password = Some(value.to_owned()),
            "sasl.jaas.config" => self.set_jaas(value)?,
            "enable.sasl.oauthbearer.unsecure.jwt" => self.unsecure_jwt = parse_bool(key, value)?,
            "sasl.oauthbearer.config" => {
                UnsecuredJwt::parse(value)?;
                self.oauthbearer_config = Some(value.to_owned());
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Takes `username="..."` and `password="..."` from Java's `sasl.jaas.config`.
    fn set_jaas(&mut self, value: &str) -> Result<(), ConfigError> {
        let field = |name: &str| -> Option<String> {
            let start = value.find(&format!("{name}=\""))? + name.len() + 2;
            let end = value[start..].find('"')? + start;
            Some(value[start..end].to_owned())
        };
        let (user, pass) = (field("username"), field("password"));
        if user.is_none() && pass.is_none() {
            // Not echoed: the value may hold secrets.
            return Err(ConfigError::InvalidValue {
                key: "sasl.jaas.config".to_owned(),
                value: REDACTED.to_owned(),
                expected: "a login module with username=\"...\" and password=\"...\"".to_owned(),
            });
        }
        if let Some(u) = user {
            self.username = Some(u);
        }
        if let Some(p) = pass {
            self.password = Some(p);
        }
        Ok(())
    }

    /// Checks that the settings fit together.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let p = self.protocol;
        if !p.uses_sasl() && (self.mechanism.is_some() || self.username.is_some()) {
            return Err(ConfigError::Invalid(format!(
                "SASL settings are given but security.protocol is {}: use SASL_SSL or SASL_PLAINTEXT",
                p.name()
            )));
        }
        if !p.uses_tls() && (self.ca.is_some() || self.certificate.is_some() || self.key.is_some())
        {
            return Err(ConfigError::Invalid(format!(
                "ssl.* settings are given but security.protocol is {}: use SSL or SASL_SSL",
                p.name()
            )));
        }
        if self.certificate.is_some() != self.key.is_some() {
            return Err(ConfigError::Invalid(
                "a client certificate needs its key: set both ssl.certificate.location and ssl.key.location (or their .pem forms)"
                    .to_owned(),
            ));
        }
        if p.uses_sasl() {
            match self.mechanism {
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "security.protocol={} needs sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER)",
                        p.name()
                    )))
                }
                Some(SaslMechanism::OAuthBearer) => {
                    if self.token_provider.is_none() && !self.unsecure_jwt {
                        return Err(ConfigError::Invalid(
                            "OAUTHBEARER needs a token provider (ClientConfig::with_oauthbearer_token_provider), or enable.sasl.oauthbearer.unsecure.jwt=true with sasl.oauthbearer.config=principal=... for tests"
                                .to_owned(),
                        ));
                    }
                }
                Some(m) => {
                    if self.username.is_none() || self.password.is_none() {
                        return Err(ConfigError::Invalid(format!(
                            "sasl.mechanism={} needs sasl.username and sasl.password",
                            m.name()
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(props: &[(&str, &str)]) -> Result<SecurityConfig, ConfigError> {
        let mut c = SecurityConfig::default();
        for (k, v) in props {
            assert!(c.try_set(k, v)?, "{k} is a security key");
        }
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let c = config(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "alice"),
            ("sasl.password", "hunter2-very-secret"),
            (
                "ssl.key.pem",
                "-----BEGIN PRIVATE KEY-----\nKEYBYTES-SECRET\n",
            ),
            ("ssl.certificate.pem", "-----BEGIN CERTIFICATE-----\n"),
            ("ssl.key.password", "key-pass-secret"),
            (
                "sasl.oauthbearer.config",
                "principal=x extension_token=ext-secret",
            ),
        ])
        .unwrap();
        let debug = format!("{c:?} {c:#?}");
        for secret in ["hunter2", "KEYBYTES", "key-pass", "ext-secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("alice"));
        let mut c = SecurityConfig::default();
        let e = c
            .try_set("sasl.jaas.config", "Module required pass=\"hunter2\";")
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn settings_that_do_not_fit_are_refused_with_what_to_do() {
        let e = config(&[("sasl.mechanism", "PLAIN")]).unwrap_err();
        assert!(
            e.to_string().contains("security.protocol is PLAINTEXT"),
            "{e}"
        );
        let e = config(&[("security.protocol", "SASL_SSL")]).unwrap_err();
        assert!(e.to_string().contains("needs sasl.mechanism"), "{e}");
        let e = config(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", "a"),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("needs sasl.username and sasl.password"),
            "{e}"
        );
        let e = config(&[("security.protocol", "SSL"), ("ssl.key.location", "k.pem")]).unwrap_err();
        assert!(e.to_string().contains("needs its key"), "{e}");
        let e = config(&[("security.protocol", "TLS")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value `TLS` for `security.protocol`: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        );
        let e = config(&[("sasl.mechanism", "GSSAPI")]).unwrap_err();
        assert!(
            e.to_string().contains("GSSAPI/Kerberos is not supported"),
            "{e}"
        );
        let e = config(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("token provider"), "{e}");
    }

    #[test]
    fn java_jaas_config_gives_the_credentials() {
        let c = config(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            (
                "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"s3cret\";",
            ),
        ])
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(c.verify_hostname);
        let c = config(&[
            ("security.protocol", "SSL"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ])
        .unwrap();
        assert!(!c.verify_hostname);
    }
}
