//! Observation (not a crash): a raw snappy block's declared length is allocated and
//! zero-filled before the block is validated (`snappy_raw_block` in
//! protocol/src/compression.rs: `out.resize(start + n, 0)` before `decompress`).
//! A 65-byte batch whose records section is just the varint "64 MiB" therefore costs a
//! 64 MiB allocation and memset (with the default `DecodeLimits`) before it fails as
//! corrupt. Bounded per batch by `max_decompressed_bytes`, but not per byte of input.
//!
//! ```text
//! cd fuzz && cargo run --release --example snappy_len_amplification
//! ```

use std::time::Instant;

use bytes::Bytes;
use paperboy_protocol::records::{batches, DecodeLimits};
use paperboy_protocol_fuzz::wrap_in_batch;

fn main() {
    // Raw snappy block: uvarint 0x0400_0000 (64 MiB) and no data.
    let section = [0x80, 0x80, 0x80, 0x20];
    let batch = Bytes::from(wrap_in_batch(2, 1, &section));
    println!("batch ({} bytes): {:02x?}", batch.len(), &batch[..]);
    let n = 50;
    let start = Instant::now();
    for _ in 0..n {
        let b = batches(batch.clone(), DecodeLimits::default())
            .next()
            .unwrap()
            .unwrap();
        b.verify_crc().unwrap();
        let err = b.records().unwrap_err();
        assert!(err.to_string().contains("corrupt snappy"), "{err}");
    }
    let per = start.elapsed() / n;
    println!(
        "records() fails as corrupt after {per:?} per {}-byte batch",
        batch.len()
    );
}
