//! The compression codecs of Kafka's record batches, all in pure Rust.
//!
//! | codec  | crate                      | on the wire                                        |
//! |--------|----------------------------|----------------------------------------------------|
//! | gzip   | `flate2` (miniz_oxide)     | a gzip stream (several members are accepted)      |
//! | snappy | `snap`                     | xerial framing (written), xerial or raw (read)     |
//! | lz4    | `lz4_flex`                 | the LZ4 frame format, 64 KiB independent blocks   |
//! | zstd   | `ruzstd`                   | one zstd frame                                     |
//!
//! Every decompression takes a cap on the decompressed size and fails with
//! [`CompressionError::TooLarge`] rather than allocating past it, so a small hostile batch
//! cannot become a large allocation.
//!
//! ```
//! use paperboy_protocol::compression::{compress, decompress, Compression};
//!
//! let input = b"hello hello hello hello".repeat(100);
//! let mut packed = Vec::new();
//! compress(Compression::Snappy, &input, &mut packed).unwrap();
//! assert!(packed.len() < input.len());
//! let unpacked = decompress(Compression::Snappy, &packed, 1 << 20).unwrap();
//! assert_eq!(unpacked, input);
//! // The same bytes, unpacked under a cap that is too small:
//! assert!(decompress(Compression::Snappy, &packed, 100).is_err());
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// The 8 magic bytes that open a xerial-framed snappy stream.
pub const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// The xerial header: the magic, then version 1 and compatible version 1 (i32, big-endian).
const XERIAL_HEADER: [u8; 16] = [
    0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1,
];
/// Uncompressed bytes per xerial block, as the Java producer writes them.
pub const XERIAL_BLOCK: usize = 32 * 1024;

/// A record batch's compression codec (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// snappy (xerial framing when written).
    Snappy,
    /// lz4, in the LZ4 frame format.
    Lz4,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Every codec, in attribute order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The name Kafka uses in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec's id in a batch's attributes (0-4).
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by a batch's attributes, or `None` for the unassigned ids 5-7.
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & 0x07 {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `compression.type` value that names no codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression type {0:?} (expected none, gzip, snappy, lz4 or zstd)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

/// Why compressing or decompressing failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The decompressed data would exceed the configured cap.
    #[error("{codec} data decompresses to more than the limit of {limit} bytes")]
    TooLarge {
        /// The codec.
        codec: Compression,
        /// The cap in bytes.
        limit: usize,
    },
    /// The compressed data is not valid for its codec.
    #[error("corrupt {codec} data: {reason}")]
    Corrupt {
        /// The codec.
        codec: Compression,
        /// What was wrong.
        reason: String,
    },
    /// The codec's encoder failed.
    #[error("{codec} compression failed: {reason}")]
    Encode {
        /// The codec.
        codec: Compression,
        /// What went wrong.
        reason: String,
    },
}

fn corrupt(codec: Compression, reason: impl fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

/// Compresses `input` with `codec`, appending to `out`. [`Compression::None`] copies.
///
/// # Errors
/// [`CompressionError::Encode`] if the codec's encoder fails.
pub fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let enc = |e: io::Error| CompressionError::Encode {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            w.write_all(input).map_err(enc)?;
            w.finish().map_err(enc)?;
        }
        Compression::Snappy => snappy_xerial_compress(input, out)?,
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .content_checksum(false);
            let mut w = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            w.write_all(input).map_err(enc)?;
            w.finish().map_err(|e| CompressionError::Encode {
                codec,
                reason: e.to_string(),
            })?;
        }
        Compression::Zstd => {
            ruzstd::encoding::compress(
                input,
                &mut *out,
                ruzstd::encoding::CompressionLevel::Fastest,
            );
        }
    }
    Ok(())
}

fn snappy_xerial_compress(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let mut encoder = snap::raw::Encoder::new();
    out.extend_from_slice(&XERIAL_HEADER);
    for chunk in input.chunks(XERIAL_BLOCK) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(chunk.len()), 0);
        let n =
            encoder
                .compress(chunk, &mut out[start..])
                .map_err(|e| CompressionError::Encode {
                    codec: Compression::Snappy,
                    reason: e.to_string(),
                })?;
        out.truncate(start + n);
        out[at..start].copy_from_slice(&(n as u32).to_be_bytes());
    }
    Ok(())
}

/// Decompresses `input`, refusing to produce more than `limit` bytes.
///
/// Snappy input is read as xerial framing when it starts with [`XERIAL_MAGIC`] (as the
/// Java producer writes it), and as one raw snappy block otherwise (as librdkafka writes
/// it). [`Compression::None`] copies.
///
/// # Errors
/// [`CompressionError::TooLarge`] past `limit`; [`CompressionError::Corrupt`] for input
/// its codec cannot read.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(CompressionError::TooLarge { codec, limit });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_capped(codec, flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Snappy => snappy_decompress(input, limit),
        Compression::Lz4 => read_capped(codec, lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => {
            // A frame's window is allocated up front: bound it by the cap (with a floor
            // that admits the windows real encoders use for small batches).
            let max_window = (limit as u64).max(8 << 20);
            let decoder =
                ruzstd::decoding::StreamingDecoder::new_with_max_window_size(input, max_window)
                    .map_err(|e| corrupt(codec, e))?;
            read_capped(codec, decoder, limit)
        }
    }
}

/// The first capacity [`read_capped`] reserves.
const FIRST_READ: usize = 8 << 10;

/// At most this much of the reserved capacity is zero-filled ahead of a read.
const READ_CHUNK: usize = 64 << 10;

/// Reads `r` to its end into a vector, failing once more than `limit` bytes come out.
///
/// The buffer doubles as it fills, like `read_to_end`, but never grows past `limit + 1`
/// bytes (one byte past the cap is enough to know it was passed). `read_to_end` doubled
/// it to twice the cap first, so a bomb under the default 64 MiB cap allocated 128 MiB,
/// and 192 MiB while the buffer moved; now at most 64 MiB + 1, and 96 MiB while it moves.
/// Like `read_to_end`, it zero-fills the capacity only as reads reach it, never twice.
fn read_capped(
    codec: Compression,
    mut r: impl Read,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    // `out[..len]` is decompressed data; `out[len..]` is zeroed room for the next read.
    let mut out = Vec::new();
    let mut len = 0;
    loop {
        if len == out.capacity() {
            if len > limit {
                return Err(CompressionError::TooLarge { codec, limit });
            }
            // Once doubling would reach the cap, go straight to one byte past it.
            let doubled = len.saturating_mul(2).max(FIRST_READ);
            let grown = if doubled >= limit {
                limit.saturating_add(1)
            } else {
                doubled
            };
            out.reserve_exact(grown - len);
        }
        let room = (len + READ_CHUNK).min(out.capacity());
        if out.len() < room {
            out.resize(room, 0);
        }
        match r.read(&mut out[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(codec, e)),
        }
    }
    out.truncate(len);
    Ok(out)
}

fn snappy_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    let codec = Compression::Snappy;
    if !input.starts_with(&XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_raw_block(input, limit, &mut out)?;
        return Ok(out);
    }
    // Xerial: 8 magic bytes, version and compatible version (i32 each, not checked, as
    // the Java and librdkafka readers do not), then [i32 BE length][raw snappy] blocks.
    let mut rest = input
        .get(16..)
        .ok_or_else(|| corrupt(codec, "xerial header shorter than 16 bytes"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(codec, "xerial block length cut short"))?;
        let len = i32::from_be_bytes(*len);
        let len = usize::try_from(len)
            .map_err(|_| corrupt(codec, format!("negative xerial block length {len}")))?;
        if len > tail.len() {
            return Err(corrupt(
                codec,
                format!(
                    "xerial block of {len} bytes, but only {} remain",
                    tail.len()
                ),
            ));
        }
        let (block, tail) = tail.split_at(len);
        snappy_raw_block(block, limit, &mut out)?;
        rest = tail;
    }
    Ok(out)
}

/// An upper bound on how many times a raw snappy block can expand (see
/// [`snappy_raw_block`]).
const SNAPPY_MAX_EXPANSION: usize = 22;

/// Appends one raw snappy block to `out`, keeping `out` within `limit`.
fn snappy_raw_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let n = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    if n > limit.saturating_sub(out.len()) {
        return Err(CompressionError::TooLarge { codec, limit });
    }
    // The densest snappy element is a 3-byte copy of 64 bytes, so a block can never
    // expand more than 64/3 times. A larger declared length is a lie: reject it before
    // reserving and zero-filling that much memory.
    if n > block.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
        return Err(corrupt(
            codec,
            format!(
                "block of {} bytes declares {n} uncompressed bytes",
                block.len()
            ),
        ));
    }
    let start = out.len();
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt(codec, e))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("record-{} ", i % 977).into_bytes())
            .collect()
    }

    #[test]
    fn snappy_declared_length_beyond_any_expansion_is_corrupt() {
        // A 4-byte raw block declaring 64 MiB: rejected without allocating 64 MiB.
        let block = [0x80, 0x80, 0x80, 0x20];
        let err = decompress(Compression::Snappy, &block, 128 << 20).unwrap_err();
        assert!(
            matches!(err, CompressionError::Corrupt { .. }),
            "expected Corrupt, got {err:?}"
        );
        assert!(err.to_string().contains("declares 67108864"), "{err}");
        // The densest real input (all zeros) still decodes: it expands about 21 times.
        let zeros = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
        assert!(
            zeros.len() > packed.len() * 20,
            "zeros expand {}x",
            zeros.len() / packed.len()
        );
        assert_eq!(
            decompress(Compression::Snappy, &packed, 2 << 20).unwrap(),
            zeros
        );
    }

    #[test]
    fn every_codec_round_trips() {
        let input = sample();
        for codec in Compression::ALL {
            let mut packed = Vec::new();
            compress(codec, &input, &mut packed).unwrap();
            if codec != Compression::None {
                assert!(packed.len() < input.len() / 2, "{codec} compresses");
            }
            assert_eq!(decompress(codec, &packed, input.len()).unwrap(), input);
            assert!(matches!(
                decompress(codec, &packed, input.len() - 1),
                Err(CompressionError::TooLarge { .. })
            ));
        }
    }

    /// `read_capped` grows its buffer in steps that stop at `limit + 1`: sizes at, just
    /// under and just over each step (the first read, powers of two, the cap) must
    /// still decode exactly at the cap and fail one byte under it.
    #[test]
    fn cap_is_exact_at_every_growth_step() {
        for len in [
            0, 1, 100, 8191, 8192, 8193, 16384, 65535, 65536, 65537, 200_000,
        ] {
            let input: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
                let mut packed = Vec::new();
                compress(codec, &input, &mut packed).unwrap();
                for limit in [len, len + 1, 2 * len, len + 8192] {
                    let out = decompress(codec, &packed, limit).unwrap();
                    assert_eq!(out, input, "{codec} len {len} limit {limit}");
                    assert!(
                        out.capacity() <= limit + 1,
                        "{codec} len {len} limit {limit}"
                    );
                }
                if let Some(short) = len.checked_sub(1) {
                    assert!(
                        matches!(
                            decompress(codec, &packed, short),
                            Err(CompressionError::TooLarge { .. })
                        ),
                        "{codec} len {len} limit {short}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_input_round_trips() {
        for codec in Compression::ALL {
            let mut packed = Vec::new();
            compress(codec, &[], &mut packed).unwrap();
            assert_eq!(decompress(codec, &packed, 0).unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn xerial_uses_32k_blocks_and_raw_snappy_is_read_too() {
        let input = sample();
        let mut xerial = Vec::new();
        compress(Compression::Snappy, &input, &mut xerial).unwrap();
        assert_eq!(&xerial[..16], &XERIAL_HEADER);
        // Walk the blocks: each decompresses to 32 KiB but the last.
        let mut rest = &xerial[16..];
        let mut blocks = 0;
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let n = snap::raw::decompress_len(&rest[4..4 + len]).unwrap();
            rest = &rest[4 + len..];
            assert!(n == XERIAL_BLOCK || rest.is_empty());
            blocks += 1;
        }
        assert_eq!(blocks, input.len().div_ceil(XERIAL_BLOCK));

        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, input.len()).unwrap(),
            input
        );
    }

    #[test]
    fn corrupt_input_is_a_typed_error() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let err =
                decompress(codec, b"\xff\xfe definitely not compressed", 1 << 20).unwrap_err();
            assert!(
                matches!(err, CompressionError::Corrupt { codec: c, .. } if c == codec),
                "{codec}: {err}"
            );
        }
        let mut bad = XERIAL_HEADER.to_vec();
        bad.extend_from_slice(&1000u32.to_be_bytes());
        bad.extend_from_slice(b"short");
        let err = decompress(Compression::Snappy, &bad, 1 << 20).unwrap_err();
        assert!(
            err.to_string().contains("xerial block of 1000 bytes"),
            "{err}"
        );
    }

    #[test]
    fn names_parse() {
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
            assert_eq!(Compression::from_attributes(codec.id()), Some(codec));
        }
        assert!("brotli".parse::<Compression>().is_err());
        assert_eq!(Compression::from_attributes(7), None);
    }
}
