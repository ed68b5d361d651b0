//! Reproducer: kafka-protocol 0.18 decodes a tagged-field tag >= 2^31 into a negative
//! `i32` key of `unknown_tagged_fields`; `compute_size` (and the tag count written by
//! `encode`) include that entry, but `encode` writes only the keys in `0..`
//! (`write_unknown_tagged_fields(buf, 0.., ..)`, kafka-protocol-0.18.0/src/protocol/mod.rs:241
//! vs `compute_unknown_tagged_fields_size`, mod.rs:257). So the decoded message
//! re-encodes to fewer bytes than `compute_size` says, and to a malformed frame (the
//! count promises a field that is not there). Found by the `response_decode` target.
//!
//! Paperboy only decodes responses, and never puts negative keys in the requests it
//! encodes, so this does not reach the client today; `frame::encode_request`'s
//! `debug_assert_eq!(.., size)` would fire if it ever did.
//!
//! ```text
//! cd fuzz && cargo run --example repro_size_mismatch
//! ```

use bytes::{Bytes, BytesMut};
use paperboy_protocol::frame::{decode_response, response_header_version};
use paperboy_protocol::kafka_protocol::messages::{ApiKey, HeartbeatRequest};
use paperboy_protocol::kafka_protocol::protocol::Encodable;

fn main() {
    // Heartbeat v4 response. Header v1: correlation id 1, one tagged field with tag
    // 0xffffffff (varint ff ff ff ff 0f) and size 0. Body: throttle 0, error 0, no tags.
    let frame: &[u8] = &[
        0, 0, 0, 1, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, //
        0, 0, 0, 0, 0, 0, 0x00,
    ];
    println!("frame: {frame:02x?}");
    let version = 4;
    let (header, body) =
        decode_response::<HeartbeatRequest>(Bytes::from_static(frame), version).unwrap();
    println!("decoded: {header:?} {body:?}");
    let hv = response_header_version(ApiKey::Heartbeat, version);
    let mut out = BytesMut::new();
    header.encode(&mut out, hv).unwrap();
    println!(
        "header v{hv}: compute_size {} but encode wrote {} bytes: {:02x?}",
        header.compute_size(hv).unwrap(),
        out.len(),
        &out[..]
    );
    assert_ne!(
        header.compute_size(hv).unwrap(),
        out.len(),
        "fixed upstream?"
    );
}
