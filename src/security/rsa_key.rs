//! RSA client keys put in the prime order graviola's signing expects.
//!
//! graviola 0.4 signs with the CRT and computes `h = (m1 - m2) * qInv mod p` with
//! `m2 = c^dQ mod q` taken as already reduced mod `p`: true when `p > q`, as OpenSSL makes
//! keys, but Java's keytool also makes keys with `p < q`. With such a key, a signature
//! whose `m2` is `>= p` comes out wrong, graviola's own check catches it, and the TLS
//! handshake fails with "signing failed: BadSignature": now and then, depending on the
//! bytes signed (seen in CI with a keytool key). Swapping the primes (with their CRT
//! exponents, and the coefficient recomputed for the new order) gives the same key in the
//! order that signs correctly every time.

use num_bigint::BigUint;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};

/// The DER of the rsaEncryption AlgorithmIdentifier (OID 1.2.840.113549.1.1.1, NULL).
const RSA_ALGORITHM: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// `key` with its primes in the order graviola signs correctly with (`p > q`); any other
/// key (not RSA, multi-prime, already ordered, or not parsed here) as it was.
pub(crate) fn normalise(key: PrivateKeyDer<'static>) -> PrivateKeyDer<'static> {
    match &key {
        PrivateKeyDer::Pkcs1(k) => match reorder(k.secret_pkcs1_der()) {
            Some(pkcs1) => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1)),
            None => key,
        },
        PrivateKeyDer::Pkcs8(k) => match rsa_in_pkcs8(k.secret_pkcs8_der()).and_then(reorder) {
            Some(pkcs1) => {
                let mut body = vec![0x02, 0x01, 0x00];
                body.extend_from_slice(&RSA_ALGORITHM);
                body.extend(tlv(0x04, &pkcs1));
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tlv(0x30, &body)))
            }
            None => key,
        },
        _ => key,
    }
}

/// The PKCS#1 key inside a PKCS#8 PrivateKeyInfo, when it is an RSA key.
fn rsa_in_pkcs8(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _version, rest) = read_tlv(info)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, algorithm, rest) = read_tlv(rest)?;
    // The OID, with or without the NULL parameters after it.
    if tag != 0x30 || algorithm.get(..11) != Some(&RSA_ALGORITHM[2..13]) {
        return None;
    }
    let (tag, key, _) = read_tlv(rest)?;
    (tag == 0x04).then_some(key)
}

/// A two-prime PKCS#1 RSAPrivateKey with `p < q`, re-encoded with the primes swapped;
/// `None` when it needs nothing (or is not one).
fn reorder(der: &[u8]) -> Option<Vec<u8>> {
    let (tag, mut rest, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let mut ints: Vec<&[u8]> = Vec::with_capacity(9);
    while !rest.is_empty() {
        let (tag, value, next) = read_tlv(rest)?;
        if tag != 0x02 {
            return None; // otherPrimeInfos: a multi-prime key
        }
        ints.push(value);
        rest = next;
    }
    // version (0: two primes), n, e, d, p, q, dP, dQ, qInv
    if ints.len() != 9 || ints[0] != [0] {
        return None;
    }
    let num = |b: &[u8]| BigUint::from_bytes_be(b);
    let (p, q, a) = (num(ints[4]), num(ints[5]), num(ints[8]));
    if p >= q || p <= BigUint::from(1u8) || a >= p {
        return None;
    }
    // The coefficient for the new order, p^-1 mod q, from the old one, a = q^-1 mod p:
    // a*q + b*p = 1 + p*q, so b = (1 + q*(p - a)) / p.
    let one = BigUint::from(1u8);
    let top = &one + &q * (&p - &a);
    let b = &top / &p;
    if &b * &p != top || (&b * &p) % &q != one {
        return None;
    }
    let mut body = Vec::with_capacity(der.len() + 8);
    for v in [
        num(ints[0]),
        num(ints[1]),
        num(ints[2]),
        num(ints[3]),
        q,
        p,
        num(ints[7]),
        num(ints[6]),
        b,
    ] {
        body.extend(integer(&v));
    }
    Some(tlv(0x30, &body))
}

/// One DER element: tag, value, and what follows it.
fn read_tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |l, &b| (l << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

/// A non-negative DER INTEGER.
fn integer(v: &BigUint) -> Vec<u8> {
    let mut bytes = v.to_bytes_be();
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    tlv(0x02, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy RSA key with p < q (p = 61, q = 53 swapped: p = 53, q = 61), e = 17.
    fn toy(p: u32, q: u32) -> Vec<u8> {
        let n = p * q;
        let phi = (p - 1) * (q - 1);
        let e = 17u32;
        let d = (1..phi).find(|d| (d * e) % phi == 1).unwrap();
        let q_inv = (1..p).find(|x| (x * q) % p == 1).unwrap();
        let mut body = Vec::new();
        for v in [0, n, e, d, p, q, d % (p - 1), d % (q - 1), q_inv] {
            body.extend(integer(&BigUint::from(v)));
        }
        tlv(0x30, &body)
    }

    fn ints(der: &[u8]) -> Vec<u32> {
        let (_, mut rest, _) = read_tlv(der).unwrap();
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (_, v, next) = read_tlv(rest).unwrap();
            out.push(v.iter().fold(0u32, |a, &b| (a << 8) | b as u32));
            rest = next;
        }
        out
    }

    #[test]
    fn a_key_with_p_below_q_gets_its_primes_swapped_and_a_coefficient_that_fits() {
        let der = toy(53, 61);
        let fixed = reorder(&der).expect("p < q is reordered");
        let v = ints(&fixed);
        let (n, e, d, p, q, dp, dq, q_inv) = (v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]);
        assert_eq!((n, e), (53 * 61, 17));
        assert_eq!((p, q), (61, 53));
        assert_eq!((dp, dq), (d % 60, d % 52));
        assert_eq!((q_inv * q) % p, 1);
        // The CRT with the new order gives what the plain private operation gives.
        for c in [2u64, 42, 1000, 3000] {
            let modpow = |b: u64, x: u32, m: u32| (0..x).fold(1u64, |acc, _| acc * b % m as u64);
            let m1 = modpow(c % p as u64, dp, p);
            let m2 = modpow(c % q as u64, dq, q);
            let h = ((m1 + p as u64 - m2 % p as u64) % p as u64) * q_inv as u64 % p as u64;
            assert_eq!(m2 + q as u64 * h, modpow(c, d, n));
        }
        // Ordered already: left alone; and the PKCS#8 wrapping round-trips.
        assert!(reorder(&fixed).is_none());
        let mut info = vec![0x02, 0x01, 0x00];
        info.extend_from_slice(&RSA_ALGORITHM);
        info.extend(tlv(0x04, &der));
        let pkcs8 = tlv(0x30, &info);
        let PrivateKeyDer::Pkcs8(out) =
            normalise(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        else {
            panic!("stays PKCS#8");
        };
        assert_eq!(rsa_in_pkcs8(out.secret_pkcs8_der()), Some(&fixed[..]));
    }
}

/// A real 2048-bit key with `p < q`, as Java's keytool made it for this project's test
/// broker (a throwaway test key), signed with graviola as a TLS client does.
#[cfg(all(
    test,
    feature = "tls-graviola",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod graviola_tests {
    use super::*;
    use rustls::SignatureScheme;
    use rustls_pki_types::pem::PemObject;

    const KEY: &str = include_str!("testdata/rsa-p-below-q.key");

    /// Signs `n` different messages with PKCS#1 v1.5 SHA-256 (deterministic, unlike PSS,
    /// so the same messages meet the fault every run); returns how many failed.
    fn failures(key: PrivateKeyDer<'static>, n: u32) -> u32 {
        let provider = rustls_graviola::default_provider();
        let signing = provider.key_provider.load_private_key(key).unwrap();
        let signer = signing
            .choose_scheme(&[SignatureScheme::RSA_PKCS1_SHA256])
            .unwrap();
        (0..n)
            .filter(|i| signer.sign(format!("handshake {i}").as_bytes()).is_err())
            .count() as u32
    }

    #[test]
    fn a_keytool_key_with_p_below_q_signs_every_time_once_reordered() {
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let as_is = failures(key.clone_key(), 400);
        let fixed = failures(normalise(key), 400);
        eprintln!("signing failures in 400: {as_is} as made, {fixed} reordered");
        assert!(
            as_is > 0,
            "the key no longer shows the fault it was kept for"
        );
        assert_eq!(fixed, 0);
    }
}
