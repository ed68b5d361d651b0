//! TLS: the crypto provider, the rustls client configuration built from the `ssl.*`
//! settings, the handshake, and errors that say what to check.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::config::{Pem, SecurityConfig};
use crate::error::{ConfigError, Error};

/// The crypto provider of this build, after checking that this CPU can run it.
///
/// `tls-ring` or `tls-aws-lc-rs` win over the default `tls-graviola` when enabled.
pub(crate) fn provider() -> Result<Arc<CryptoProvider>, Error> {
    #[cfg(feature = "tls-ring")]
    {
        // Deprecated in rustls 0.23.4x for its lack of post-quantum key exchange; still
        // the way to select ring.
        #[allow(deprecated)]
        Ok(Arc::new(rustls::crypto::ring::default_provider()))
    }
    #[cfg(all(not(feature = "tls-ring"), feature = "tls-aws-lc-rs"))]
    {
        Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    }
    #[cfg(all(
        not(feature = "tls-ring"),
        not(feature = "tls-aws-lc-rs"),
        feature = "tls-graviola",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        let missing = missing_cpu_features();
        if !missing.is_empty() {
            return Err(cpu_error(&missing));
        }
        Ok(Arc::new(rustls_graviola::default_provider()))
    }
    #[cfg(not(any(
        feature = "tls-ring",
        feature = "tls-aws-lc-rs",
        all(
            feature = "tls-graviola",
            any(target_arch = "x86_64", target_arch = "aarch64")
        )
    )))]
    {
        Err(Error::Tls {
            broker: String::new(),
            message: "this build has no TLS crypto provider for this target: enable paperboy's `tls-ring` or `tls-aws-lc-rs` feature, or hand over a rustls ClientConfig".to_owned(),
        })
    }
}

/// The error for a CPU that lacks what graviola needs.
#[cfg_attr(
    not(all(
        feature = "tls-graviola",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )),
    allow(dead_code)
)]
fn cpu_error(missing: &[&str]) -> Error {
    Error::Tls {
        broker: String::new(),
        message: format!(
            "this CPU lacks {} which the default crypto provider (graviola) needs; build paperboy with the `tls-ring` or `tls-aws-lc-rs` feature instead (both compile C)",
            missing.join(", ")
        ),
    }
}

/// The CPU features that the default crypto provider (graviola) needs and this CPU
/// lacks; empty where it runs. Without them the first TLS connection fails with
/// [`Error::Tls`] naming them (graviola itself would panic, so Paperboy checks first).
pub fn missing_cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! need {
            ($($f:tt),*) => {$(
                if !std::arch::is_x86_feature_detected!($f) {
                    missing.push($f);
                }
            )*};
        }
        need!("aes", "pclmulqdq", "bmi1", "bmi2", "adx", "avx", "avx2");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! need {
            ($($f:tt),*) => {$(
                if !std::arch::is_aarch64_feature_detected!($f) {
                    missing.push($f);
                }
            )*};
        }
        need!("neon", "aes", "pmull", "sha2");
    }
    missing
}

/// The rustls configuration for `cfg`: the one handed over, or one built from `ssl.*`.
pub(crate) fn client_config(cfg: &SecurityConfig) -> Result<Arc<rustls::ClientConfig>, Error> {
    if let Some(c) = &cfg.tls_config {
        return Ok(c.clone());
    }
    let provider = provider()?;
    let roots = Arc::new(roots(cfg)?);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            broker: String::new(),
            message: format!("the crypto provider cannot do TLS 1.2 or 1.3: {e}"),
        })?;
    let builder = if cfg.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| Error::Tls {
                broker: String::new(),
                message: format!("cannot build the certificate verifier: {e}"),
            })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
    };
    let config = match (&cfg.certificate, &cfg.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "ssl.certificate.location")?;
            let key = private_key(key, cfg.key_password.as_deref())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => ConfigError::Invalid(format!(
                        "the private key ({}) does not match the client certificate ({})",
                        cfg.key
                            .as_ref()
                            .map(|k| k.describe("ssl.key.location"))
                            .unwrap_or_default(),
                        cert.describe("ssl.certificate.location")
                    )),
                    other => ConfigError::Invalid(format!(
                        "the client certificate and key are not usable: {other}"
                    )),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn roots(cfg: &SecurityConfig) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    match &cfg.ca {
        Some(ca) => {
            for c in certificates(ca, "ssl.ca.location")? {
                roots.add(c).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "{} holds a certificate that cannot be a trust anchor: {e}",
                        ca.describe("ssl.ca.location")
                    ))
                })?;
            }
        }
        None => {
            // The system's roots; the Mozilla set built in when the system has none (a
            // static binary in a scratch container).
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    Ok(roots)
}

fn certificates(pem: &Pem, key_name: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = pem.read(key_name)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::Invalid(format!("{} is not PEM: {e}", pem.describe(key_name))))?;
    if certs.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{} holds no certificate (-----BEGIN CERTIFICATE-----)",
            pem.describe(key_name)
        )));
    }
    Ok(certs)
}

fn private_key(pem: &Pem, password: Option<&str>) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let name = "ssl.key.location";
    let bytes = pem.read(name)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let password = password.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{} is encrypted: set ssl.key.password",
                pem.describe(name)
            ))
        })?;
        let (label, der) = pkcs8::der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| ConfigError::Invalid(format!("{} is not PEM: {e}", pem.describe(name))))?;
        debug_assert_eq!(label, "ENCRYPTED PRIVATE KEY");
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
            ConfigError::Invalid(format!(
                "{} is not an encrypted PKCS#8 key: {e}",
                pem.describe(name)
            ))
        })?;
        let plain = info.decrypt(password.as_bytes()).map_err(|_| {
            ConfigError::Invalid(format!(
                "{} does not decrypt with ssl.key.password (wrong password, or an unsupported cipher: PBES2 with AES is supported)",
                pem.describe(name)
            ))
        })?;
        let key = PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into());
        return Ok(super::rsa_key::normalise(key));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(ConfigError::Invalid(format!(
            "{} is a legacy encrypted PEM key: convert it to PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc)",
            pem.describe(name)
        )));
    }
    PrivateKeyDer::from_pem_slice(&bytes)
        .map(super::rsa_key::normalise)
        .map_err(|e| {
            ConfigError::Invalid(format!(
                "{} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                pem.describe(name)
            ))
        })
}

/// `ssl.endpoint.identification.algorithm=none`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS handshake over `tcp` with the broker at `addr` (`host:port`).
pub(crate) async fn handshake(
    config: Arc<rustls::ClientConfig>,
    addr: &str,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Error> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| Error::Tls {
        broker: addr.to_owned(),
        message: format!("`{host}` is not a valid server name for TLS"),
    })?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::Tls {
            broker: addr.to_owned(),
            message: explain_io(&e, host),
        })
}

/// What a failed TLS read, write or handshake means, and what to check.
pub(crate) fn explain_io(e: &std::io::Error, host: &str) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return explain(tls, host);
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return "the broker closed the connection during the TLS handshake: is this a plaintext listener (security.protocol=PLAINTEXT or SASL_PLAINTEXT)?".to_owned();
    }
    format!("{e}")
}

fn explain(e: &rustls::Error, host: &str) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "the broker's certificate is not trusted (unknown issuer): set ssl.ca.location to the CA that signed it".to_owned(),
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the broker's certificate is not valid for `{host}` (it names {}): connect by a name the certificate lists, or set ssl.endpoint.identification.algorithm=none",
                presented
                    .iter()
                    .map(|p| p
                        .trim_start_matches("DnsName(\"")
                        .trim_start_matches("IpAddress(")
                        .trim_end_matches("\")")
                        .trim_end_matches(')'))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CertificateError::NotValidForName => format!(
                "the broker's certificate is not valid for `{host}`: connect by a name the certificate lists, or set ssl.endpoint.identification.algorithm=none"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the broker's certificate has expired ({c:?})")
            }
            other => format!("the broker's certificate is not acceptable: {other:?}"),
        },
        rustls::Error::AlertReceived(a @ (A::CertificateRequired | A::BadCertificate | A::HandshakeFailure | A::UnknownCA | A::CertificateUnknown | A::AccessDenied)) => format!(
            "the broker refused the handshake ({a:?}): it may require a client certificate that it trusts (ssl.certificate.location, ssl.key.location)"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => format!(
            "the broker does not speak TLS here ({e}): is this a plaintext listener (security.protocol=PLAINTEXT or SASL_PLAINTEXT)?"
        ),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_cpu_runs_the_default_provider() {
        // The machines this project builds and tests on have every feature graviola needs.
        assert_eq!(missing_cpu_features(), Vec::<&str>::new());
        assert!(provider().is_ok());
    }

    #[test]
    fn a_cpu_without_the_features_gets_an_error_naming_them_and_the_way_out() {
        let e = cpu_error(&["adx", "avx2"]);
        assert!(!e.is_retriable() && e.is_auth());
        assert_eq!(
            e.to_string(),
            "TLS failed: this CPU lacks adx, avx2 which the default crypto provider (graviola) needs; build paperboy with the `tls-ring` or `tls-aws-lc-rs` feature instead (both compile C)"
        );
    }

    #[test]
    fn missing_files_and_bad_pem_are_config_errors_naming_the_file() {
        let mut cfg = SecurityConfig::default();
        cfg.try_set("security.protocol", "SSL").unwrap();
        cfg.try_set("ssl.ca.location", "/nonexistent/ca.pem")
            .unwrap();
        let e = client_config(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("cannot read ssl.ca.location `/nonexistent/ca.pem`"),
            "{e}"
        );
        cfg.try_set("ssl.ca.pem", "not pem at all").unwrap();
        let e = client_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
    }

    #[test]
    fn system_roots_are_used_without_a_ca() {
        let mut cfg = SecurityConfig::default();
        cfg.try_set("security.protocol", "SSL").unwrap();
        assert!(roots(&cfg).unwrap().len() > 10);
    }
}
