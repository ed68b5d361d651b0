//! Snappy decompression of arbitrary bytes (xerial framing when the input starts with
//! the xerial magic, one raw block otherwise), checked against the `snap` crate for raw
//! blocks; and a compress/decompress round trip of the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperboy_protocol::compression::{compress, decompress, Compression, XERIAL_MAGIC};
use paperboy_protocol_fuzz::LIMIT;

fuzz_target!(|data: &[u8]| {
    let out = decompress(Compression::Snappy, data, LIMIT);
    if let Ok(v) = &out {
        assert!(v.len() <= LIMIT, "output past the cap");
    }
    if !data.starts_with(&XERIAL_MAGIC) {
        // Raw block: must agree with snap itself whenever the output fits the cap.
        if let Ok(n) = snap::raw::decompress_len(data) {
            if n <= LIMIT {
                let reference = snap::raw::Decoder::new().decompress_vec(data);
                match (&out, &reference) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "differs from snap"),
                    (Err(_), Err(_)) => {}
                    _ => panic!("ok/err differs from snap: ours {out:?}, snap {reference:?}"),
                }
            }
        } else {
            assert!(out.is_err());
        }
    }

    let mut packed = Vec::new();
    compress(Compression::Snappy, data, &mut packed).expect("snappy compresses");
    assert!(packed.starts_with(&XERIAL_MAGIC));
    let back = decompress(Compression::Snappy, &packed, data.len()).expect("round trip");
    assert_eq!(back, data, "snappy round trip");
});
