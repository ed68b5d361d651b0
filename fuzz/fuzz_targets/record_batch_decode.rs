//! Decodes arbitrary bytes as a record set, in two modes picked by the first byte.
//!
//! - `data[0] & 0x80 == 0`: raw mode. All of `data` (first byte included: it is the high
//!   byte of the first base offset, 0 for real batches) is a record set: `batches`,
//!   then every getter, `verify_crc`, `control_marker`, every record and header.
//! - `data[0] & 0x80 != 0`: wrapped mode. The fuzzer's bytes become the records section
//!   of one batch with a valid header and a correct CRC-32C, so that the decompressors
//!   and the record parser are reached without guessing checksums:
//!   - bits 0-2: the codec id in the attributes (5-7 are invalid ids, on purpose);
//!   - bit 3: log-append-time; bit 4: transactional; bit 5: control;
//!   - bit 6: compress `data[2..]` with the codec first (the record parser then sees
//!     the fuzzer's bytes through a real codec), else `data[2..]` is the section as is;
//!   - `data[1]`: the declared record count (see `count_from_byte`).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use paperboy_protocol::compression::Compression;
use paperboy_protocol_fuzz::{compress, count_from_byte, exercise_record_set, wrap_in_batch};

fuzz_target!(|data: &[u8]| {
    let Some(&sel) = data.first() else { return };
    if sel & 0x80 == 0 {
        exercise_record_set(Bytes::copy_from_slice(data));
        return;
    }
    let Some(&count) = data.get(1) else { return };
    let payload = &data[2..];
    let codec_id = i16::from(sel & 0x07);
    let attributes = codec_id | i16::from(sel & 0x38);
    let section;
    let section = match Compression::from_attributes(codec_id) {
        Some(codec) if sel & 0x40 != 0 => {
            section = compress(codec, payload);
            &section[..]
        }
        _ => payload,
    };
    let batch = wrap_in_batch(attributes, count_from_byte(count), section);
    let seen = exercise_record_set(Bytes::from(batch));
    if codec_id <= 4 {
        assert_eq!(seen.batches, 1, "a wrapped batch with a known codec parses");
        assert_eq!(seen.crc_ok, 1, "a wrapped batch's CRC verifies");
    } else {
        assert_eq!(seen.batches, 0, "codec ids 5-7 are rejected");
    }
});
