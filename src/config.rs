//! Client configuration, by the property names librdkafka and the Java client use.
//!
//! Every component has one config type with its defaults in one place. Each can be built
//! with typed setters or from `key = value` properties ([`ClientConfig::set`],
//! [`ClientConfig::from_properties`]). An unknown key, or a value that does not parse, is
//! an error that names it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::security::{SaslMechanism, SecurityConfig, SecurityProtocol, TokenProvider};

/// Settings shared by everything that talks to brokers.
///
/// | property | default | meaning |
/// |---|---|---|
/// | `bootstrap.servers` | (required) | comma-separated `host:port` list to learn the cluster from |
/// | `client.id` | `paperboy` | sent with every request; shows in broker logs and quotas |
/// | `request.timeout.ms` | 30000 | how long to wait for a broker's answer |
/// | `socket.connection.setup.timeout.ms` | 10000 | how long a TCP connect + ApiVersions may take |
/// | `retries` | 2147483647 | how often a retriable failure is retried (bounded by the operation's deadline) |
/// | `retry.backoff.ms` | 100 | first wait between retries; doubles each time |
/// | `retry.backoff.max.ms` | 1000 | longest wait between retries |
/// | `metadata.max.age.ms` | 300000 | metadata older than this is refreshed before use |
/// | `default.api.timeout.ms` | 60000 | deadline of an operation, all its retries included |
/// | `receive.message.max.bytes` | 104857600 | largest response frame accepted from a broker |
/// | `allow.auto.create.topics` | false (producers: true) | metadata requests for a missing topic ask the broker to create it, where the broker allows (`auto.create.topics.enable`) |
/// | `security.protocol`, `ssl.*`, `sasl.*` | `PLAINTEXT` | TLS and SASL: see [`SecurityConfig`] |
///
/// # Example
/// ```
/// use paperboy::ClientConfig;
///
/// let config = ClientConfig::from_properties([
///     ("bootstrap.servers", "127.0.0.1:9092"),
///     ("client.id", "billing"),
/// ])?;
/// assert_eq!(config.client_id(), "billing");
///
/// let err = ClientConfig::from_properties([("bootstrap.server", "x:1")]).unwrap_err();
/// assert_eq!(err.to_string(), "unknown configuration key `bootstrap.server`");
/// # Ok::<(), paperboy::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) bootstrap_servers: Vec<String>,
    pub(crate) client_id: String,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) retry_backoff: Duration,
    pub(crate) retry_backoff_max: Duration,
    pub(crate) metadata_max_age: Duration,
    pub(crate) default_api_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) allow_auto_create_topics: bool,
    pub(crate) security: SecurityConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: Vec::new(),
            client_id: "paperboy".to_owned(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: i32::MAX as u32,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(1000),
            metadata_max_age: Duration::from_secs(300),
            default_api_timeout: Duration::from_secs(60),
            max_response_bytes: 100 * 1024 * 1024,
            allow_auto_create_topics: false,
            security: SecurityConfig::default(),
        }
    }
}

impl ClientConfig {
    /// A configuration with the defaults and the given bootstrap servers
    /// (comma-separated `host:port`).
    pub fn new(bootstrap_servers: &str) -> Self {
        ClientConfig {
            bootstrap_servers: split_list(bootstrap_servers),
            ..ClientConfig::default()
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
        from_properties(ClientConfig::default(), ClientConfig::set, props)
    }

    /// Sets one property by its librdkafka/Java name.
    ///
    /// # Errors
    /// [`ConfigError::UnknownKey`] for a key this component does not know,
    /// [`ConfigError::InvalidValue`] for a value that does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self, ConfigError> {
        if !self.try_set(key, value)? {
            return Err(unknown_key(key));
        }
        Ok(self)
    }

    /// Sets `key` if it is a client property; `Ok(false)` if the key is not one.
    /// Components that embed a `ClientConfig` try their own keys, then this.
    pub(crate) fn try_set(&mut self, key: &str, value: &str) -> Result<bool, ConfigError> {
        match key {
            "bootstrap.servers" | "metadata.broker.list" => {
                self.bootstrap_servers = split_list(value);
                if self.bootstrap_servers.is_empty() {
                    return Err(invalid(key, value, "a comma-separated list of host:port"));
                }
            }
            "client.id" => self.client_id = value.to_owned(),
            "request.timeout.ms" | "socket.timeout.ms" => {
                self.request_timeout = parse_ms(key, value, 1)?
            }
            "socket.connection.setup.timeout.ms" => self.connect_timeout = parse_ms(key, value, 1)?,
            "retries" | "message.send.max.retries" => self.retries = parse_num(key, value, 0)?,
            "retry.backoff.ms" => self.retry_backoff = parse_ms(key, value, 1)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = parse_ms(key, value, 1)?,
            "metadata.max.age.ms" => self.metadata_max_age = parse_ms(key, value, 1)?,
            "default.api.timeout.ms" => self.default_api_timeout = parse_ms(key, value, 1)?,
            "receive.message.max.bytes" => self.max_response_bytes = parse_num(key, value, 1000)?,
            "allow.auto.create.topics" => self.allow_auto_create_topics = parse_bool(key, value)?,
            _ => return self.security.try_set(key, value),
        }
        Ok(true)
    }

    /// The security settings (TLS and SASL).
    pub fn security(&self) -> &SecurityConfig {
        &self.security
    }

    /// Sets `security.protocol`.
    #[must_use]
    pub fn with_security_protocol(mut self, protocol: SecurityProtocol) -> Self {
        self.security.protocol = protocol;
        self
    }

    /// Sets the SASL mechanism and the user name and password (PLAIN and SCRAM).
    #[must_use]
    pub fn with_sasl(
        mut self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.security.mechanism = Some(mechanism);
        self.security.username = Some(username.into());
        self.security.password = Some(password.into());
        self
    }

    /// Uses SASL OAUTHBEARER with tokens from `provider` (asked when a connection
    /// authenticates, and again before its token expires).
    ///
    /// # Example
    /// ```
    /// use std::sync::Arc;
    /// use std::time::{Duration, SystemTime};
    /// use paperboy::security::{OAuthToken, SecurityProtocol, TokenFuture, TokenProvider};
    /// use paperboy::ClientConfig;
    ///
    /// struct Idp;
    /// impl TokenProvider for Idp {
    ///     fn token(&self) -> TokenFuture<'_> {
    ///         Box::pin(async {
    ///             let expires = SystemTime::now() + Duration::from_secs(600);
    ///             Ok(OAuthToken::new("eyJ...", expires))
    ///         })
    ///     }
    /// }
    ///
    /// let config = ClientConfig::new("broker:9094")
    ///     .with_security_protocol(SecurityProtocol::SaslSsl)
    ///     .with_oauthbearer_token_provider(Arc::new(Idp));
    /// ```
    #[must_use]
    pub fn with_oauthbearer_token_provider(mut self, provider: Arc<dyn TokenProvider>) -> Self {
        self.security.mechanism = Some(SaslMechanism::OAuthBearer);
        self.security.token_provider = Some(provider);
        self
    }

    /// Uses this rustls configuration for TLS instead of one built from the `ssl.*`
    /// properties (which are then ignored). Its crypto provider is yours to choose.
    #[must_use]
    pub fn with_tls_config(mut self, config: Arc<crate::security::rustls::ClientConfig>) -> Self {
        self.security.tls_config = Some(config);
        self
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &[String] {
        &self.bootstrap_servers
    }

    /// Sets the bootstrap servers (`bootstrap.servers`).
    #[must_use]
    pub fn with_bootstrap_servers(mut self, servers: &str) -> Self {
        self.bootstrap_servers = split_list(servers);
        self
    }

    /// The client id sent with every request.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sets the client id (`client.id`). Default is `paperboy`.
    #[must_use]
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Sets how long to wait for a broker's answer (`request.timeout.ms`).
    /// Default is 30 s.
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how long connecting to a broker may take, ApiVersions included
    /// (`socket.connection.setup.timeout.ms`). Default is 10 s.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the first and the longest wait between retries (`retry.backoff.ms`,
    /// `retry.backoff.max.ms`). Defaults are 100 ms and 1 s.
    #[must_use]
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_backoff = first;
        self.retry_backoff_max = max;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.is_empty() {
            return Err(ConfigError::Invalid(
                "`bootstrap.servers` is required".to_owned(),
            ));
        }
        for s in &self.bootstrap_servers {
            if parse_host_port(s).is_none() {
                return Err(invalid("bootstrap.servers", s, "host:port"));
            }
        }
        self.security.validate()
    }
}

pub(crate) fn parse_host_port(s: &str) -> Option<(&str, u16)> {
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let (host, port) = s.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The one `from_properties` of every configuration: `defaults` with each `key = value`
/// given to `set` in turn; the first error stops it.
pub(crate) fn from_properties<C, I, K, V>(
    defaults: C,
    set: impl for<'c> Fn(&'c mut C, &str, &str) -> Result<&'c mut C, ConfigError>,
    props: I,
) -> Result<C, ConfigError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut config = defaults;
    for (k, v) in props {
        set(&mut config, k.as_ref(), v.as_ref())?;
    }
    Ok(config)
}

/// The error for a key no configuration knows.
pub(crate) fn unknown_key(key: &str) -> ConfigError {
    ConfigError::UnknownKey {
        key: key.to_owned(),
    }
}

/// The value trimmed, or `None` when that is empty.
pub(crate) fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

pub(crate) fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

pub(crate) fn parse_num<T>(key: &str, value: &str, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match value.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(invalid(key, value, &format!("a whole number >= {min}"))),
    }
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, value, "true or false")),
    }
}

/// A size given in KiB (librdkafka's `...kbytes` properties), in bytes.
pub(crate) fn parse_kib(key: &str, value: &str) -> Result<usize, ConfigError> {
    parse_num::<usize>(key, value, 1).map(|kib| kib.saturating_mul(1024))
}

pub(crate) fn parse_ms(key: &str, value: &str, min: u64) -> Result<Duration, ConfigError> {
    parse_num::<u64>(key, value, min).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_errors_name_the_key() {
        let c = ClientConfig::from_properties([
            ("bootstrap.servers", "a:1, b:2"),
            ("request.timeout.ms", "1500"),
        ])
        .unwrap();
        assert_eq!(c.bootstrap_servers, vec!["a:1", "b:2"]);
        assert_eq!(c.request_timeout, Duration::from_millis(1500));

        let e = ClientConfig::from_properties([("request.timeout.ms", "soon")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value `soon` for `request.timeout.ms`: a whole number >= 1"
        );
        let e = ClientConfig::from_properties([("linger.mss", "5")]).unwrap_err();
        assert_eq!(
            e,
            ConfigError::UnknownKey {
                key: "linger.mss".into()
            }
        );
    }

    #[test]
    fn bootstrap_is_required_and_checked() {
        assert!(ClientConfig::default().validate().is_err());
        assert!(ClientConfig::new("nohostport").validate().is_err());
        assert!(ClientConfig::new("127.0.0.1:9092").validate().is_ok());
        assert_eq!(parse_host_port("[::1]:9092"), Some(("::1", 9092)));
        assert_eq!(parse_host_port("PLAINTEXT://h:1"), Some(("h", 1)));
    }
}
