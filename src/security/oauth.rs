//! OAUTHBEARER tokens: the provider a service plugs in, the unsecured JWT for tests
//! (librdkafka's `enable.sasl.oauthbearer.unsecure.jwt`), and the cache that asks the
//! provider again before a token expires.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::config::invalid;
use crate::error::ConfigError;

/// A bearer token for SASL OAUTHBEARER.
#[derive(Clone)]
pub struct OAuthToken {
    /// The token itself (a JWT, for Kafka's built-in validators).
    pub value: String,
    /// When it stops being valid. Paperboy asks the provider for a new one once 80% of
    /// its lifetime has passed, and the broker ends a session at this time at the latest
    /// (re-authentication then uses the new token).
    pub expires_at: SystemTime,
    /// SASL extensions (`auth` is reserved), sent with the token.
    pub extensions: BTreeMap<String, String>,
}

impl OAuthToken {
    /// A token valid until `expires_at`, with no extensions.
    pub fn new(value: impl Into<String>, expires_at: SystemTime) -> Self {
        OAuthToken {
            value: value.into(),
            expires_at,
            extensions: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthToken")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("extensions", &self.extensions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The error a [`TokenProvider`] returns.
pub type TokenError = Box<dyn std::error::Error + Send + Sync>;

/// Where OAUTHBEARER tokens come from: your identity provider's client.
///
/// Asked when a connection authenticates and again before the current token expires.
/// Return a fresh token each call; Paperboy caches it.
///
/// # Example
/// ```
/// use std::time::{Duration, SystemTime};
/// use paperboy::security::{OAuthToken, TokenError, TokenProvider};
///
/// struct FromMyIdp;
///
/// impl TokenProvider for FromMyIdp {
///     fn token(&self) -> paperboy::security::TokenFuture<'_> {
///         Box::pin(async {
///             // Ask the identity provider here (client credentials flow, ...).
///             let jwt = "eyJhbGciOi...".to_owned();
///             Ok::<_, TokenError>(OAuthToken::new(jwt, SystemTime::now() + Duration::from_secs(3600)))
///         })
///     }
/// }
/// ```
pub trait TokenProvider: Send + Sync + 'static {
    /// A new token.
    fn token(&self) -> TokenFuture<'_>;
}

/// The future [`TokenProvider::token`] returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<OAuthToken, TokenError>> + Send + 'a>>;

/// librdkafka's unsecured JWT (`alg: none`), for brokers with the default unsecured
/// validator (tests and development only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnsecuredJwt {
    principal: String,
    principal_claim: String,
    scope_claim: String,
    scope: Vec<String>,
    lifetime: Duration,
    extensions: BTreeMap<String, String>,
}

impl UnsecuredJwt {
    /// Parses `sasl.oauthbearer.config`: space-separated `name=value`: `principal`
    /// (required), `principalClaimName`, `scope` (comma-separated), `scopeClaimName`,
    /// `lifeSeconds`, `extension_NAME`.
    pub(crate) fn parse(config: &str) -> Result<Self, ConfigError> {
        let key = "sasl.oauthbearer.config";
        // The value is not echoed: extensions may hold secrets.
        let bad = |what: &str| invalid(key, "[redacted]", what);
        let mut jwt = UnsecuredJwt {
            principal: String::new(),
            principal_claim: "sub".to_owned(),
            scope_claim: "scope".to_owned(),
            scope: Vec::new(),
            lifetime: Duration::from_secs(3600),
            extensions: BTreeMap::new(),
        };
        for part in config.split_whitespace() {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad("space-separated name=value pairs"))?;
            match k {
                "principal" => jwt.principal = v.to_owned(),
                "principalClaimName" => jwt.principal_claim = v.to_owned(),
                "scopeClaimName" => jwt.scope_claim = v.to_owned(),
                "scope" => jwt.scope = v.split(',').map(str::to_owned).collect(),
                "lifeSeconds" => {
                    let s: u64 = v
                        .parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| bad("lifeSeconds=<seconds>"))?;
                    jwt.lifetime = Duration::from_secs(s);
                }
                _ => match k.strip_prefix("extension_") {
                    Some(name) if !name.is_empty() && name != "auth" => {
                        jwt.extensions.insert(name.to_owned(), v.to_owned());
                    }
                    _ => {
                        return Err(bad(
                            "principal, principalClaimName, scope, scopeClaimName, lifeSeconds or extension_NAME",
                        ))
                    }
                },
            }
        }
        if jwt.principal.is_empty() {
            return Err(bad("principal=<name> is required"));
        }
        Ok(jwt)
    }

    /// A token issued now.
    pub(crate) fn token(&self) -> OAuthToken {
        let now = SystemTime::now();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut claims = serde_json::Map::new();
        claims.insert(self.principal_claim.clone(), self.principal.clone().into());
        claims.insert("iat".to_owned(), iat.into());
        claims.insert("exp".to_owned(), (iat + self.lifetime.as_secs()).into());
        if !self.scope.is_empty() {
            claims.insert(self.scope_claim.clone(), self.scope.clone().into());
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims).to_string());
        OAuthToken {
            value: format!("{header}.{payload}."),
            expires_at: now + self.lifetime,
            extensions: self.extensions.clone(),
        }
    }
}

impl TokenProvider for UnsecuredJwt {
    fn token(&self) -> TokenFuture<'_> {
        let t = UnsecuredJwt::token(self);
        Box::pin(async move { Ok(t) })
    }
}

/// The current token, asked for again once 80% of its lifetime has passed.
pub(crate) struct TokenCache {
    provider: Arc<dyn TokenProvider>,
    current: Mutex<Option<(OAuthToken, SystemTime)>>,
}

impl TokenCache {
    pub(crate) fn new(provider: Arc<dyn TokenProvider>) -> Self {
        TokenCache {
            provider,
            current: Mutex::new(None),
        }
    }

    /// A token with at least a fifth of its lifetime left.
    pub(crate) async fn token(&self) -> Result<OAuthToken, TokenError> {
        let now = SystemTime::now();
        if let Some((t, refresh_at)) = &*self.current.lock().unwrap_or_else(|e| e.into_inner()) {
            if now < *refresh_at {
                return Ok(t.clone());
            }
        }
        let t = self.provider.token().await?;
        let lifetime = t.expires_at.duration_since(now).unwrap_or_default();
        let refresh_at = now + lifetime.mul_f64(0.8);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((t.clone(), refresh_at));
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn unsecured_jwt_has_librdkafkas_shape() {
        let jwt =
            UnsecuredJwt::parse("principal=alice lifeSeconds=60 scope=a,b extension_traceId=123")
                .unwrap();
        let t = jwt.token();
        let parts: Vec<&str> = t.value.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "", "no signature");
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"none"}"#);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["scope"], serde_json::json!(["a", "b"]));
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 60);
        assert_eq!(t.extensions.get("traceId").map(String::as_str), Some("123"));

        assert!(UnsecuredJwt::parse("lifeSeconds=5").is_err());
        assert!(UnsecuredJwt::parse("principal=a bogus=1").is_err());
        assert!(UnsecuredJwt::parse("principal=a extension_auth=x").is_err());
    }

    struct Counting(AtomicUsize, Duration);
    impl TokenProvider for Counting {
        fn token(&self) -> TokenFuture<'_> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let exp = SystemTime::now() + self.1;
            Box::pin(async move { Ok(OAuthToken::new(format!("t{n}"), exp)) })
        }
    }

    #[tokio::test]
    async fn the_cache_asks_again_before_expiry() {
        let p = Arc::new(Counting(AtomicUsize::new(0), Duration::from_secs(3600)));
        let cache = TokenCache::new(p.clone());
        assert_eq!(cache.token().await.unwrap().value, "t0");
        assert_eq!(cache.token().await.unwrap().value, "t0");
        assert_eq!(p.0.load(Ordering::SeqCst), 1);

        // A token whose lifetime is already 80% gone is replaced at once.
        let p = Arc::new(Counting(AtomicUsize::new(0), Duration::ZERO));
        let cache = TokenCache::new(p.clone());
        assert_eq!(cache.token().await.unwrap().value, "t0");
        assert_eq!(cache.token().await.unwrap().value, "t1");
        assert!(format!("{:?}", cache.token().await.unwrap()).contains("[redacted]"));
    }
}
