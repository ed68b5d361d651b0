//! SASL authentication of a connection: SaslHandshake v1 then SaslAuthenticate, with
//! PLAIN and SCRAM-SHA-256/512 (RFC 5802, RFC 7677, as Kafka runs it: 4096 iterations,
//! no channel binding).
//!
//! When the cluster has SASL users, a connection may send only ApiVersions, SaslHandshake
//! and SaslAuthenticate until it has authenticated; anything else closes it, as a broker
//! does. A failed authentication is answered with SASL_AUTHENTICATION_FAILED, then the
//! connection closes.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, FixedOutputReset};
use hmac::{Mac, SimpleHmac};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use sha2::{Sha256, Sha512};

use crate::handlers::{encode, HandlerError};
use crate::state::random_u64;

/// Kafka's SCRAM iteration count (the minimum clients accept).
const SCRAM_ITERATIONS: u32 = 4096;

/// A SASL mechanism the cluster can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// `PLAIN`: user and password in the clear.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn from_name(name: &str) -> Option<SaslMechanism> {
        [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// The users of each mechanism: user -> password.
#[derive(Debug, Clone, Default)]
pub(crate) struct SaslUsers {
    pub by_mechanism: HashMap<SaslMechanism, HashMap<String, String>>,
}

impl SaslUsers {
    pub fn required(&self) -> bool {
        !self.by_mechanism.is_empty()
    }

    fn enabled(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.by_mechanism.keys().map(|m| m.name()).collect();
        v.sort_unstable();
        v
    }

    fn password(&self, m: SaslMechanism, user: &str) -> Option<&str> {
        self.by_mechanism.get(&m)?.get(user).map(String::as_str)
    }
}

/// Where a connection is in its authentication.
#[derive(Debug, Default)]
pub(crate) enum SaslConn {
    /// Nothing yet.
    #[default]
    Start,
    /// Handshake done with this mechanism.
    Handshaken(SaslMechanism),
    /// SCRAM: server-first sent.
    ScramFirst {
        mechanism: SaslMechanism,
        auth_prefix: String,
        nonce: String,
        salted: Vec<u8>,
    },
    /// Authenticated.
    Done,
}

/// What the server does after a SASL request.
pub(crate) struct SaslOutcome {
    pub body: BytesMut,
    /// Close the connection after sending the response.
    pub close: bool,
}

pub(crate) fn handshake(
    users: &SaslUsers,
    conn: &mut SaslConn,
    version: i16,
    mut body: Bytes,
) -> Result<SaslOutcome, HandlerError> {
    let req = SaslHandshakeRequest::decode(&mut body, version)
        .map_err(|e| HandlerError(format!("cannot decode: {e}")))?;
    let mechanisms: Vec<StrBytes> = users
        .enabled()
        .into_iter()
        .map(StrBytes::from_static_str)
        .collect();
    let chosen = SaslMechanism::from_name(req.mechanism.as_str())
        .filter(|m| users.by_mechanism.contains_key(m));
    let resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    let (resp, close) = match (chosen, &*conn) {
        (Some(m), SaslConn::Start) => {
            *conn = SaslConn::Handshaken(m);
            (resp, false)
        }
        (Some(_), _) => (
            resp.with_error_code(ResponseError::IllegalSaslState.code()),
            true,
        ),
        (None, _) => (
            resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
            true,
        ),
    };
    Ok(SaslOutcome {
        body: encode(&resp, version)?,
        close,
    })
}

pub(crate) fn authenticate(
    users: &SaslUsers,
    conn: &mut SaslConn,
    version: i16,
    mut body: Bytes,
) -> Result<SaslOutcome, HandlerError> {
    let req = SaslAuthenticateRequest::decode(&mut body, version)
        .map_err(|e| HandlerError(format!("cannot decode: {e}")))?;
    let state = std::mem::take(conn);
    let step = match state {
        SaslConn::Handshaken(SaslMechanism::Plain) => plain(users, &req.auth_bytes),
        SaslConn::Handshaken(m) => scram_first(users, m, &req.auth_bytes),
        SaslConn::ScramFirst {
            mechanism,
            auth_prefix,
            nonce,
            salted,
        } => scram_final(mechanism, &auth_prefix, &nonce, &salted, &req.auth_bytes),
        SaslConn::Start | SaslConn::Done => Err((
            ResponseError::IllegalSaslState,
            "SaslAuthenticate before SaslHandshake".to_owned(),
        )),
    };
    let (resp, close) = match step {
        Ok((next, bytes)) => {
            *conn = next;
            (
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
                false,
            )
        }
        Err((code, message)) => (
            SaslAuthenticateResponse::default()
                .with_error_code(code.code())
                .with_error_message(Some(StrBytes::from_string(message))),
            true,
        ),
    };
    Ok(SaslOutcome {
        body: encode(&resp, version)?,
        close,
    })
}

type Step = Result<(SaslConn, Vec<u8>), (ResponseError, String)>;

fn failed(why: &str) -> (ResponseError, String) {
    (
        ResponseError::SaslAuthenticationFailed,
        format!("Authentication failed: {why}"),
    )
}

/// PLAIN: `authzid NUL user NUL password`.
fn plain(users: &SaslUsers, token: &[u8]) -> Step {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [_authzid, user, password] = parts[..] else {
        return Err(failed("malformed PLAIN token"));
    };
    let user = std::str::from_utf8(user).map_err(|_| failed("user is not UTF-8"))?;
    match users.password(SaslMechanism::Plain, user) {
        Some(p) if p.as_bytes() == password => Ok((SaslConn::Done, Vec::new())),
        _ => Err(failed("Invalid username or password")),
    }
}

/// The value of attribute `name` in a SCRAM message (`a=...,b=...`).
fn attr(msg: &str, name: char) -> Option<&str> {
    msg.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.len() == 1 && k.starts_with(name)).then_some(v)
    })
}

/// SCRAM's user names escape `,` and `=` as `=2C` and `=3D`.
fn unescape_user(u: &str) -> String {
    u.replace("=2C", ",").replace("=3D", "=")
}

fn hmac<D>(key: &[u8], data: &[u8]) -> Vec<u8>
where
    D: Digest + BlockSizeUser + FixedOutputReset + Clone,
{
    let mut m = <SimpleHmac<D> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn salted_password(m: SaslMechanism, password: &str, salt: &[u8]) -> Vec<u8> {
    match m {
        SaslMechanism::ScramSha512 => {
            let mut out = vec![0u8; 64];
            pbkdf2::pbkdf2::<SimpleHmac<Sha512>>(
                password.as_bytes(),
                salt,
                SCRAM_ITERATIONS,
                &mut out,
            )
            .expect("HMAC takes any key length");
            out
        }
        _ => {
            let mut out = vec![0u8; 32];
            pbkdf2::pbkdf2::<SimpleHmac<Sha256>>(
                password.as_bytes(),
                salt,
                SCRAM_ITERATIONS,
                &mut out,
            )
            .expect("HMAC takes any key length");
            out
        }
    }
}

fn scram_first(users: &SaslUsers, m: SaslMechanism, token: &[u8]) -> Step {
    let msg = std::str::from_utf8(token).map_err(|_| failed("client-first is not UTF-8"))?;
    // gs2 header: no channel binding, no authzid other than empty.
    let bare = msg
        .strip_prefix("n,,")
        .or_else(|| msg.strip_prefix("y,,"))
        .ok_or_else(|| failed("unsupported GS2 header"))?;
    let user = attr(bare, 'n')
        .map(unescape_user)
        .ok_or_else(|| failed("no user"))?;
    let client_nonce = attr(bare, 'r').ok_or_else(|| failed("no nonce"))?;
    let password = users
        .password(m, &user)
        .ok_or_else(|| failed("Invalid username or password"))?;
    let salt: Vec<u8> = random_u64()
        .to_be_bytes()
        .into_iter()
        .chain(random_u64().to_be_bytes())
        .collect();
    let nonce = format!("{client_nonce}{:016x}{:016x}", random_u64(), random_u64());
    let server_first = format!("r={nonce},s={},i={SCRAM_ITERATIONS}", B64.encode(&salt));
    Ok((
        SaslConn::ScramFirst {
            mechanism: m,
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
            salted: salted_password(m, password, &salt),
        },
        server_first.into_bytes(),
    ))
}

fn scram_final(
    m: SaslMechanism,
    auth_prefix: &str,
    nonce: &str,
    salted: &[u8],
    token: &[u8],
) -> Step {
    let msg = std::str::from_utf8(token).map_err(|_| failed("client-final is not UTF-8"))?;
    let (without_proof, proof) = msg
        .rsplit_once(",p=")
        .ok_or_else(|| failed("client-final without a proof"))?;
    // As Kafka's ScramSaslServer: the nonce must end with ours (librdkafka sends its own
    // nonce followed by the server's whole nonce).
    if !attr(without_proof, 'r').is_some_and(|r| r.ends_with(nonce)) {
        return Err(failed("the nonce does not match"));
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| failed("the proof is not base64"))?;
    let auth_message = format!("{auth_prefix},{without_proof}");
    let (ok, server_signature) = match m {
        SaslMechanism::ScramSha512 => verify::<Sha512>(salted, &auth_message, &proof),
        _ => verify::<Sha256>(salted, &auth_message, &proof),
    };
    if !ok {
        return Err(failed("Invalid username or password"));
    }
    Ok((
        SaslConn::Done,
        format!("v={}", B64.encode(server_signature)).into_bytes(),
    ))
}

/// Checks a client proof; returns whether it is right and the server signature.
fn verify<D>(salted: &[u8], auth_message: &str, proof: &[u8]) -> (bool, Vec<u8>)
where
    D: Digest + BlockSizeUser + FixedOutputReset + Clone,
{
    let client_key = hmac::<D>(salted, b"Client Key");
    let stored_key = D::digest(&client_key).to_vec();
    let client_signature = hmac::<D>(&stored_key, auth_message.as_bytes());
    let ok = proof.len() == client_signature.len() && {
        let recovered: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        D::digest(&recovered).to_vec() == stored_key
    };
    let server_key = hmac::<D>(salted, b"Server Key");
    (ok, hmac::<D>(&server_key, auth_message.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_exchange_verifies() {
        // RFC 7677's SCRAM-SHA-256 example: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(SaslMechanism::ScramSha256, "pencil", &salt);
        let prefix = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let fin = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let (_, server_final) = scram_final(
            SaslMechanism::ScramSha256,
            prefix,
            nonce,
            &salted,
            fin.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let bad = format!("c=biws,r={nonce},p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert!(scram_final(
            SaslMechanism::ScramSha256,
            prefix,
            nonce,
            &salted,
            bad.as_bytes()
        )
        .is_err());
    }

    #[test]
    fn plain_checks_user_and_password() {
        let mut users = SaslUsers::default();
        users
            .by_mechanism
            .entry(SaslMechanism::Plain)
            .or_default()
            .insert("alice".into(), "secret".into());
        assert!(plain(&users, b"\0alice\0secret").is_ok());
        assert!(plain(&users, b"\0alice\0wrong").is_err());
        assert!(plain(&users, b"\0bob\0secret").is_err());
        assert!(plain(&users, b"garbage").is_err());
    }
}
