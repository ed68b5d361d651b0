//! Hostile batches are rejected with typed errors *within a bounded allocation*.
//!
//! `records::tests` already checks that a decompression bomb and a lying record count
//! give typed errors (`decompress_bomb_bounded_every_codec`,
//! `record_count_lies_are_typed_errors`). This test measures what decoding them costs:
//! a counting global allocator tracks the peak of live heap bytes while one batch goes
//! through `batches` and `RecordBatch::records`, and the peak must stay under a stated
//! bound that depends on the cap, never on what the batch claims.
//!
//! - Bombs: a batch of about 1 MB or less (32 KB for zstd) whose records section expands
//!   to 1 GiB (gzip, lz4, zstd) or 64 MiB (snappy, which cannot expand more than 22:1),
//!   decoded with a 1 MiB cap, plus containers that *declare* 1 TiB (zstd frame content
//!   size, lz4 frame content size) or 3 GiB (a raw snappy block). Each must fail with
//!   `is_too_large()`, having allocated at most 1.5 x the cap plus the codec's working
//!   state (`bomb_bound`): 1.6 MB for gzip, 1.8 MB for zstd, 1 MiB for snappy and
//!   10 MB for lz4 under the 1 MiB cap; 96 MiB for a 1 GiB zstd bomb under the default
//!   64 MiB cap (192 MiB before `read_capped` stopped doubling past the cap).
//! - Record counts: batches (every codec) holding two small records whose header claims
//!   `i32::MAX` or 100 million records fail with `DecodeError::RecordCount` having
//!   allocated at most the decompressed section plus `COUNT_BOUND`.
//!
//! Everything runs in one `#[test]` so that no other test thread allocates during a
//! measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use bytes::{BufMut, Bytes, BytesMut};
use paperboy_protocol::compression::{compress, Compression, XERIAL_MAGIC};
use paperboy_protocol::records::{
    batches, encode_batch, BatchOptions, DecodeError, DecodeLimits, NewRecord,
};

/// Live heap bytes, and the highest value since the last [`measure`] started.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, SeqCst) + n;
    PEAK.fetch_max(now, SeqCst);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), SeqCst);
    }

    // Counted as the worst case, a move: old and new blocks both live for a moment.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size);
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            LIVE.fetch_sub(new_size, SeqCst);
        } else {
            LIVE.fetch_sub(layout.size(), SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the peak of heap bytes it added.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(SeqCst);
    PEAK.store(base, SeqCst);
    let out = f();
    (out, PEAK.load(SeqCst) - base)
}

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The decompression cap of the bomb cases.
const CAP: usize = MIB;

/// What decoding a bomb may allocate beyond the cap's share: the output buffer doubles
/// up to `cap + 1` bytes, so it may briefly hold 1.5 x the cap (the last half-cap buffer
/// while it moves into the full one), plus the codec's working state. Before the fix in
/// `compression::read_capped` it reached 3 x the cap (`read_to_end` doubled past it).
fn bomb_bound(codec: Compression, cap: usize) -> usize {
    cap + cap / 2 + codec_state(codec)
}

/// A codec's working state while decoding. lz4's frame decoder reserves the frame's
/// declared block size (at most 4 MiB) for both the compressed and the decompressed
/// block; gzip has its 32 KiB window and buffers; zstd the window the frame declares,
/// here 128 KiB (a frame asking for more than `max(cap, 8 MiB)` is refused).
fn codec_state(codec: Compression) -> usize {
    match codec {
        Compression::Lz4 => 8 * MIB + 512 * KIB,
        _ => 512 * KIB,
    }
}

/// What a record-count lie may allocate beyond the decompressed section: the codec's
/// working state for a small batch (lz4's two 64 KiB block buffers are the largest).
const COUNT_BOUND: usize = 192 * KIB;

const LIMITS: DecodeLimits = DecodeLimits {
    max_decompressed_bytes: CAP,
};

/// A v2 batch around `section` (compressed or not) declaring `count` records, with a
/// correct CRC-32C.
fn batch(codec: Compression, count: i32, section: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(61 + section.len());
    b.put_i64(0); // base offset
    b.put_i32((61 - 12 + section.len()) as i32);
    b.put_i32(0); // partition leader epoch
    b.put_i8(2); // magic
    b.put_u32(0); // CRC, below
    b.put_i16(codec.id());
    b.put_i32(count.saturating_sub(1)); // last offset delta
    b.put_i64(1_700_000_000_000);
    b.put_i64(1_700_000_000_000);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(count);
    b.extend_from_slice(section);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// Decodes the first batch of `bytes` and its records; the error it stops at.
fn decode(bytes: Bytes, limits: DecodeLimits) -> DecodeError {
    let batch = batches(bytes, limits)
        .next()
        .expect("one batch")
        .expect("the batch header parses");
    match batch.records() {
        Err(e) => e,
        Ok(records) => records
            .filter_map(Result::err)
            .next()
            .expect("some record fails"),
    }
}

/// gzip: one member of 4 MiB of zeros, repeated 256 times (the reader reads
/// concatenated members, as Kafka's does): 1 GiB.
fn gzip_bomb() -> Vec<u8> {
    let member = compress_to_vec(Compression::Gzip, &vec![0; 4 * MIB]);
    member.repeat(GIB / (4 * MIB))
}

/// lz4: a frame of 256 copies of one independent 4 MiB block of zeros: 1 GiB.
fn lz4_bomb(content_size: Option<u64>) -> Vec<u8> {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .content_size(content_size);
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    enc.write_all(&vec![0; 4 * MIB]).unwrap();
    // `finish` would check the declared content size; flushing writes the block.
    enc.flush().unwrap();
    let one = enc.get_ref().clone();
    let header = if content_size.is_some() { 15 } else { 7 };
    let (head, block) = one.split_at(header);
    let mut out = head.to_vec();
    for _ in 0..GIB / (4 * MIB) {
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&[0; 4]); // end mark
    out
}

/// zstd: a frame of 128 KiB RLE blocks (4 bytes each) of zeros, `blocks` of them;
/// 8192 blocks are 1 GiB in 32 KiB. With `content_size`, the frame header declares it.
fn zstd_bomb(blocks: usize, content_size: Option<u64>) -> Vec<u8> {
    let mut out = vec![0x28, 0xb5, 0x2f, 0xfd];
    match content_size {
        None => out.push(0x00),    // no content size, not single segment, no checksum
        Some(_) => out.push(0xc0), // 8-byte content size
    }
    out.push(0x38); // window descriptor: 2^(10 + 7) = 128 KiB
    if let Some(n) = content_size {
        out.extend_from_slice(&n.to_le_bytes());
    }
    for i in 0..blocks {
        let last = u32::from(i + 1 == blocks);
        let header = (128 * KIB as u32) << 3 | 1 << 1 | last; // RLE block
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// snappy: a xerial stream of 64 blocks, each 1 MiB of zeros (22:1 at best): 64 MiB.
fn snappy_bomb() -> Vec<u8> {
    let block = snap::raw::Encoder::new()
        .compress_vec(&vec![0; MIB])
        .unwrap();
    let mut out = XERIAL_MAGIC.to_vec();
    out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
    for _ in 0..64 {
        out.extend_from_slice(&(block.len() as u32).to_be_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// A raw snappy block that declares 3 GiB.
fn snappy_claim() -> Vec<u8> {
    let mut claim = Vec::new();
    let mut n: u64 = 3 << 30;
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    claim.extend_from_slice(&[0; 16]);
    claim
}

fn compress_to_vec(codec: Compression, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compress(codec, data, &mut out).unwrap();
    out
}

fn two_records() -> Vec<NewRecord> {
    (0..2)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; 100])),
            headers: vec![],
            timestamp_ms: 1_700_000_000_000,
        })
        .collect()
}

#[test]
fn hostile_batches_fail_within_bounded_allocation() {
    let mut report = Vec::new();

    // Decompression bombs: name, codec, records section.
    let bombs: Vec<(&str, Compression, Vec<u8>)> = vec![
        ("gzip, 1 GiB", Compression::Gzip, gzip_bomb()),
        ("lz4, 1 GiB", Compression::Lz4, lz4_bomb(None)),
        (
            "lz4, 1 GiB, declares 1 TiB",
            Compression::Lz4,
            lz4_bomb(Some(1 << 40)),
        ),
        ("zstd, 1 GiB", Compression::Zstd, zstd_bomb(8192, None)),
        (
            "zstd, 4 MiB, declares 1 TiB",
            Compression::Zstd,
            zstd_bomb(32, Some(1 << 40)),
        ),
        ("snappy xerial, 64 MiB", Compression::Snappy, snappy_bomb()),
        (
            "snappy raw, declares 3 GiB",
            Compression::Snappy,
            snappy_claim(),
        ),
    ];
    for (name, codec, section) in bombs {
        let compressed = section.len();
        let bytes = batch(codec, 1, &section);
        drop(section);
        let (err, peak) = measure(|| decode(bytes, LIMITS));
        assert!(err.is_too_large(), "{name}: {err}");
        report.push(format!("{name}: {compressed} B, cap {CAP}: peak {peak} B"));
        let bound = bomb_bound(codec, CAP);
        assert!(peak <= bound, "{name}: peak {peak} B past {bound} B");
    }

    // The same 1 GiB zstd bomb under the default 64 MiB cap: bounded by that cap.
    let bytes = batch(Compression::Zstd, 1, &zstd_bomb(8192, None));
    let cap = DecodeLimits::default().max_decompressed_bytes;
    let (err, peak) = measure(|| decode(bytes, DecodeLimits::default()));
    assert!(err.is_too_large(), "{err}");
    report.push(format!(
        "zstd, 1 GiB: 32 KiB, default cap {cap}: peak {peak} B"
    ));
    let bound = bomb_bound(Compression::Zstd, cap);
    assert!(peak <= bound, "peak {peak} B past {bound} B");

    // Record counts that lie, in every codec.
    let mut plain = BytesMut::new();
    encode_batch(&two_records(), &BatchOptions::default(), &mut plain).unwrap();
    let plain_section = plain[61..].to_vec();
    for codec in Compression::ALL {
        let section = compress_to_vec(codec, &plain_section);
        for count in [i32::MAX, 100_000_000] {
            let bytes = batch(codec, count, &section);
            let (err, peak) = measure(|| decode(bytes, LIMITS));
            assert!(
                matches!(err, DecodeError::RecordCount { declared, .. } if declared == count),
                "{codec} count {count}: {err}"
            );
            report.push(format!("{codec}, count {count}: peak {peak} B ({err})"));
            let bound = plain_section.len() + COUNT_BOUND;
            assert!(
                peak <= bound,
                "{codec} count {count}: peak {peak} B past {bound} B"
            );
        }
    }
    // A count that only lies a little (3 declared, 2 present): the third record is a
    // typed error, after two records' worth of work.
    let bytes = batch(Compression::None, 3, &plain_section);
    let (err, peak) = measure(|| decode(bytes, LIMITS));
    assert!(
        matches!(err, DecodeError::RecordCount { declared: 3, .. }),
        "{err}"
    );
    report.push(format!("none, count 3 of 2: peak {peak} B ({err})"));
    assert!(peak <= COUNT_BOUND, "peak {peak} B");

    for line in &report {
        eprintln!("{line}");
    }
}
