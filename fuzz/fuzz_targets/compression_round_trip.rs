//! compress then decompress gives the input back, for every codec (picked by the first
//! byte); with a cap one byte short, decompression fails with `TooLarge`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paperboy_protocol::compression::{decompress, CompressionError};
use paperboy_protocol_fuzz::{codec_from_byte, compress};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let codec = codec_from_byte(sel);
    let packed = compress(codec, input);
    let back = decompress(codec, &packed, input.len()).unwrap_or_else(|e| panic!("{codec}: {e}"));
    assert_eq!(back, input, "{codec} round trip");
    // Under a cap one byte short of the input: TooLarge (never a panic, never Ok).
    if let Some(short) = input.len().checked_sub(1) {
        match decompress(codec, &packed, short) {
            Err(CompressionError::TooLarge { .. }) => {}
            other => panic!("{codec}: cap {short} gave {other:?}"),
        }
    }
});
