//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), client side, as Kafka speaks
//! it: no channel binding (`n,,`), the user name SASLprepped and escaped.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, FixedOutputReset};
use hmac::{Mac, SimpleHmac};
use sha2::{Sha256, Sha512};

/// Why a SCRAM exchange failed on the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScramError(pub(crate) String);

/// Kafka accepts at least this many iterations (and at most 16384).
const MIN_ITERATIONS: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

enum State {
    /// client-first sent; waiting for server-first.
    First {
        client_first_bare: String,
        nonce: String,
    },
    /// client-final sent; waiting for server-final, which must carry this signature.
    Final {
        server_signature: Vec<u8>,
    },
    Done,
}

/// One SCRAM exchange.
pub(crate) struct Scram {
    hash: Hash,
    password: String,
    state: State,
}

impl Scram {
    /// Starts an exchange; returns it and the client-first message.
    pub(crate) fn start(
        hash: Hash,
        user: &str,
        password: &str,
        nonce: String,
    ) -> Result<(Scram, Vec<u8>), ScramError> {
        let user = stringprep::saslprep(user)
            .map_err(|_| ScramError("the user name is not valid for SASLprep".into()))?;
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let client_first_bare = format!("n={user},r={nonce}");
        let msg = format!("n,,{client_first_bare}").into_bytes();
        Ok((
            Scram {
                hash,
                password: password.to_owned(),
                state: State::First {
                    client_first_bare,
                    nonce,
                },
            },
            msg,
        ))
    }

    /// A random nonce: 24 bytes, base64 (printable, no comma).
    pub(crate) fn random_nonce() -> Result<String, ScramError> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| ScramError(format!("no random numbers for the nonce: {e}")))?;
        Ok(B64.encode(bytes))
    }

    /// Answers the server's message: `Some(client-final)` after server-first, `None` once
    /// server-final has been verified.
    pub(crate) fn step(&mut self, server: &[u8]) -> Result<Option<Vec<u8>>, ScramError> {
        let server = std::str::from_utf8(server)
            .map_err(|_| ScramError("the server's message is not UTF-8".into()))?;
        match std::mem::replace(&mut self.state, State::Done) {
            State::First {
                client_first_bare,
                nonce,
            } => {
                let (client_final, server_signature) = match self.hash {
                    Hash::Sha256 => {
                        client_final::<Sha256>(&self.password, &client_first_bare, &nonce, server)?
                    }
                    Hash::Sha512 => {
                        client_final::<Sha512>(&self.password, &client_first_bare, &nonce, server)?
                    }
                };
                self.state = State::Final { server_signature };
                Ok(Some(client_final.into_bytes()))
            }
            State::Final { server_signature } => {
                if let Some(e) = attr(server, 'e') {
                    return Err(ScramError(format!("the server refused: {e}")));
                }
                let v = attr(server, 'v')
                    .ok_or_else(|| ScramError("server-final message without v=".into()))?;
                let v = B64
                    .decode(v)
                    .map_err(|_| ScramError("server signature is not base64".into()))?;
                if v != server_signature {
                    return Err(ScramError(
                        "the server's signature does not match: it does not know the password (is this the broker you meant?)"
                            .into(),
                    ));
                }
                Ok(None)
            }
            State::Done => Err(ScramError("the exchange is already complete".into())),
        }
    }
}

/// The value of attribute `name` (`name=value`, comma-separated).
fn attr(msg: &str, name: char) -> Option<&str> {
    msg.split(',').find_map(|part| {
        let mut c = part.chars();
        (c.next() == Some(name) && c.next() == Some('=')).then(|| &part[2..])
    })
}

fn hmac<D>(key: &[u8], data: &[u8]) -> Vec<u8>
where
    D: Digest + BlockSizeUser + FixedOutputReset + Clone,
{
    let mut m = <SimpleHmac<D> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// The client-final message and the server signature to expect.
fn client_final<D>(
    password: &str,
    client_first_bare: &str,
    nonce: &str,
    server_first: &str,
) -> Result<(String, Vec<u8>), ScramError>
where
    D: Digest + BlockSizeUser + FixedOutputReset + Clone + Sync,
{
    if let Some(e) = attr(server_first, 'e') {
        return Err(ScramError(format!("the server refused: {e}")));
    }
    let r = attr(server_first, 'r').ok_or_else(|| ScramError("server-first without r=".into()))?;
    if !r.starts_with(nonce) || r.len() == nonce.len() {
        return Err(ScramError("the server's nonce does not extend ours".into()));
    }
    let salt = attr(server_first, 's')
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| ScramError("server-first without a base64 salt".into()))?;
    let iterations: u32 = attr(server_first, 'i')
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| ScramError("server-first without an iteration count".into()))?;
    if iterations < MIN_ITERATIONS {
        return Err(ScramError(format!(
            "the server asks for {iterations} iterations, fewer than {MIN_ITERATIONS}"
        )));
    }
    let password = stringprep::saslprep(password)
        .map_err(|_| ScramError("the password is not valid for SASLprep".into()))?;
    let mut salted = vec![0u8; <D as Digest>::output_size()];
    pbkdf2::pbkdf2::<SimpleHmac<D>>(password.as_bytes(), &salt, iterations, &mut salted)
        .expect("HMAC takes any key length");
    let client_key = hmac::<D>(&salted, b"Client Key");
    let stored_key = D::digest(&client_key).to_vec();
    // Kafka requires r= to be exactly the server's nonce.
    let without_proof = format!("c=biws,r={r}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let client_signature = hmac::<D>(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&client_signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let server_key = hmac::<D>(&salted, b"Server Key");
    let server_signature = hmac::<D>(&server_key, auth_message.as_bytes());
    Ok((
        format!("{without_proof},p={}", B64.encode(proof)),
        server_signature,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange (SCRAM-SHA-256, user "user", password "pencil").
    #[test]
    fn rfc7677_example() {
        let (mut s, first) = Scram::start(
            Hash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        )
        .unwrap();
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.step(server_first.as_bytes()).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            s.step(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_wrong_server_signature_or_nonce_is_refused() {
        let (mut s, _) = Scram::start(Hash::Sha256, "user", "pencil", "abc".into()).unwrap();
        let e = match s.step(b"r=xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096") {
            Err(e) => e,
            Ok(_) => panic!("a foreign nonce was accepted"),
        };
        assert!(e.0.contains("nonce"), "{e:?}");

        let (mut s, _) = Scram::start(Hash::Sha512, "us=er,x", "pw", "abc".into()).unwrap();
        s.step(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap()
            .unwrap();
        let e = s.step(b"v=AAAA").unwrap_err();
        assert!(e.0.contains("does not match"), "{e:?}");
        let (mut s, _) = Scram::start(Hash::Sha512, "u", "pw", "abc".into()).unwrap();
        assert!(s
            .step(b"r=abcdef,s=AAAA,i=100")
            .unwrap_err()
            .0
            .contains("iterations"));
    }

    #[test]
    fn user_names_are_escaped() {
        let (_, first) = Scram::start(Hash::Sha256, "a=b,c", "p", "n".into()).unwrap();
        assert_eq!(first, b"n,,n=a=3Db=2Cc,r=n");
        assert_eq!(Scram::random_nonce().unwrap().len(), 32);
    }
}
