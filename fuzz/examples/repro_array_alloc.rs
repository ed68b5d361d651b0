//! Reproducer: kafka-protocol 0.18 pre-allocates arrays from the wire count.
//!
//! `types::Array::decode` (kafka-protocol-0.18.0/src/protocol/types.rs:988) and
//! `types::CompactArray::decode` (types.rs:1096) call `Vec::with_capacity(n)` with the
//! element count read from the frame, before checking that the frame holds `n`
//! elements. An 8-byte response frame therefore asks for ~200 GB and the process
//! aborts ("memory allocation of ... bytes failed"): not an error, not a catchable
//! panic. Reachable through `paperboy_protocol::frame::decode_response` for every
//! response type with an array (found by the `response_decode` fuzz target).
//!
//! ```text
//! cd fuzz && cargo run --example repro_array_alloc            # OffsetCommit v2, Array
//! cd fuzz && cargo run --example repro_array_alloc -- compact # Metadata v12, CompactArray
//! ```

use bytes::Bytes;
use paperboy_protocol::frame::decode_response;
use paperboy_protocol::kafka_protocol::messages::{MetadataRequest, OffsetCommitRequest};

fn main() {
    if std::env::args().nth(1).as_deref() == Some("compact") {
        // Response header v1: correlation id 1, no tagged fields (0x00).
        // Body v12: throttle_time_ms 0, brokers = compact array, length varint
        // 0xffffffff0f (u32::MAX, i.e. u32::MAX - 1 elements).
        let frame =
            Bytes::from_static(&[0, 0, 0, 1, 0x00, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        eprintln!("decoding Metadata v12 response: {:02x?}", &frame[..]);
        let r = decode_response::<MetadataRequest>(frame, 12);
        eprintln!(
            "returned (not reached on 64-bit Linux): {:?}",
            r.map(|_| ())
        );
    } else {
        // Response header v0: correlation id 1. Body v2: topics = array of
        // 0x7fffffff elements (i32::MAX), and nothing else.
        let frame = Bytes::from_static(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]);
        eprintln!("decoding OffsetCommit v2 response: {:02x?}", &frame[..]);
        let r = decode_response::<OffsetCommitRequest>(frame, 2);
        eprintln!(
            "returned (not reached on 64-bit Linux): {:?}",
            r.map(|_| ())
        );
    }
}
