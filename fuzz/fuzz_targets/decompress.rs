//! Every decompressor over arbitrary bytes: the first byte picks the codec (id modulo 5)
//! and, with bit 3, a small cap of 4 KiB instead of 1 MiB. Nothing may panic, and
//! nothing may come out past the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperboy_protocol::compression::decompress;
use paperboy_protocol_fuzz::{codec_from_byte, LIMIT};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let codec = codec_from_byte(sel & 0x07);
    let limit = if sel & 0x08 != 0 { 4096 } else { LIMIT };
    match decompress(codec, input, limit) {
        Ok(out) => assert!(
            out.len() <= limit,
            "{codec}: {} bytes past cap {limit}",
            out.len()
        ),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
