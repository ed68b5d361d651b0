//! Record batch v2: the only record format Kafka 4.x reads and writes.
//!
//! Decoding is lazy and zero-copy: [`batches`] walks a fetch response's record set over
//! one [`Bytes`] without copying; [`RecordBatch::records`] iterates a batch's records, whose
//! keys, values and headers are slices of that same buffer (or of the one decompressed
//! buffer, for a compressed batch). The uncompressed path allocates nothing per record.
//!
//! Everything read from the wire is checked before it is used: lengths against what
//! remains, record counts against the bytes that could hold them, decompressed size
//! against [`DecodeLimits`]. Bad input yields a [`DecodeError`] that names the batch and
//! what was wrong; it never panics.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use paperboy_protocol::compression::Compression;
//! use paperboy_protocol::records::{batches, encode_batch, BatchOptions, DecodeLimits, NewRecord};
//!
//! let records = vec![
//!     NewRecord { key: Some("k1".into()), value: Some("v1".into()), timestamp_ms: 1_000, ..Default::default() },
//!     NewRecord { key: Some("k2".into()), value: None, timestamp_ms: 1_001, ..Default::default() },
//! ];
//! let opts = BatchOptions { base_offset: 40, compression: Compression::Lz4, ..Default::default() };
//! let mut buf = BytesMut::new();
//! encode_batch(&records, &opts, &mut buf).unwrap();
//!
//! let mut decoded = Vec::new();
//! for batch in batches(buf.freeze(), DecodeLimits::default()) {
//!     let batch = batch.unwrap();
//!     batch.verify_crc().unwrap();
//!     for record in batch.records().unwrap() {
//!         let record = record.unwrap();
//!         decoded.push((record.offset, record.key, record.value));
//!     }
//! }
//! assert_eq!(decoded, vec![
//!     (40, Some(Bytes::from("k1")), Some(Bytes::from("v1"))),
//!     (41, Some(Bytes::from("k2")), None),
//! ]);
//! ```

mod encode;
pub(crate) mod varint;

pub use encode::{encode_batch, BatchOptions, EncodeError, NewRecord, RecordHeader};

use bytes::Bytes;

use crate::compression::{self, Compression, CompressionError};
use varint::{read_varint, read_varlong, VarintError};

/// Bytes of a batch before its records: offset, length, epoch, magic, crc, attributes,
/// last offset delta, two timestamps, producer id and epoch, base sequence, count.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` ends: the `batchLength` field counts what follows it.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest possible record: a length and six one-byte fields.
const MIN_RECORD_LEN: usize = 7;

// Field offsets in a v2 batch.
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Bounds applied to untrusted input while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The most bytes one compressed batch may decompress to (default 64 MiB).
    pub max_decompressed_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: 64 << 20,
        }
    }
}

/// Why a record set or batch did not decode. Each variant names the batch by its base
/// offset.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The batch length field is smaller than a batch header.
    #[error("batch at offset {base_offset}: length {length} is too small for a v2 batch")]
    BatchLength {
        /// The batch's base offset.
        base_offset: i64,
        /// The declared length.
        length: i32,
    },
    /// Not a v2 batch (v0 and v1 message sets are gone from Kafka 4).
    #[error("batch at offset {base_offset}: unsupported magic {magic} (only v2 is supported)")]
    UnsupportedMagic {
        /// The batch's base offset.
        base_offset: i64,
        /// The magic byte found.
        magic: i8,
    },
    /// The stored CRC-32C does not match the batch's bytes.
    #[error("batch at offset {base_offset}: CRC-32C mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch {
        /// The batch's base offset.
        base_offset: i64,
        /// The CRC in the batch header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The attributes name a compression codec id that does not exist.
    #[error("batch at offset {base_offset}: unknown compression codec id {id}")]
    UnknownCodec {
        /// The batch's base offset.
        base_offset: i64,
        /// The codec id (attributes bits 0-2).
        id: i16,
    },
    /// The records section did not decompress, or exceeded the size cap.
    #[error("batch at offset {base_offset}: {source}")]
    Decompress {
        /// The batch's base offset.
        base_offset: i64,
        /// What the codec reported.
        #[source]
        source: CompressionError,
    },
    /// The record count disagrees with the records present.
    #[error("batch at offset {base_offset}: declares {declared} records, but {reason}")]
    RecordCount {
        /// The batch's base offset.
        base_offset: i64,
        /// The count in the batch header.
        declared: i32,
        /// How the records disagree.
        reason: String,
    },
    /// A record inside the batch is malformed.
    #[error("batch at offset {base_offset}, record {index}: {reason}")]
    Record {
        /// The batch's base offset.
        base_offset: i64,
        /// The record's position in the batch.
        index: i32,
        /// What was wrong.
        reason: String,
    },
}

impl DecodeError {
    /// True when the size cap of [`DecodeLimits`] was hit (the batch may be fine).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            DecodeError::Decompress {
                source: CompressionError::TooLarge { .. },
                ..
            }
        )
    }
}

/// Decodes the batches of a record set (a fetch response's `records`, a log segment).
///
/// The iterator yields whole batches. A record set from a fetch normally ends with part
/// of a batch that did not fit in the response: that tail is not an error; iteration
/// stops and [`Batches::truncated_tail`] reports it. After the first error the iterator
/// ends.
pub fn batches(records: Bytes, limits: DecodeLimits) -> Batches {
    Batches {
        rest: records,
        limits,
        truncated: false,
        failed: false,
    }
}

/// Iterator over the batches of a record set; see [`batches`].
#[derive(Debug, Clone)]
pub struct Batches {
    rest: Bytes,
    limits: DecodeLimits,
    truncated: bool,
    failed: bool,
}

impl Batches {
    /// True once iteration met an incomplete batch at the end of the record set (the
    /// broker cut it at the fetch size limit; fetch again from the next offset).
    pub fn truncated_tail(&self) -> bool {
        self.truncated
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let Some(head) = self.rest.first_chunk::<LOG_OVERHEAD>() else {
            self.truncated = true;
            self.rest.clear();
            return None;
        };
        let base_offset = i64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let length = i32::from_be_bytes(head[8..].try_into().unwrap_or_default());
        if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            self.failed = true;
            return Some(Err(DecodeError::BatchLength {
                base_offset,
                length,
            }));
        }
        let total = LOG_OVERHEAD + length as usize;
        if total > self.rest.len() {
            // The magic byte of a cut batch may still be readable, and wrong: then the
            // tail is not a batch at all.
            if let Some(&magic) = self.rest.get(MAGIC_AT) {
                if magic != 2 {
                    self.failed = true;
                    return Some(Err(DecodeError::UnsupportedMagic {
                        base_offset,
                        magic: magic as i8,
                    }));
                }
            }
            self.truncated = true;
            self.rest.clear();
            return None;
        }
        let bytes = self.rest.split_to(total);
        let batch = RecordBatch::parse(bytes, self.limits);
        if batch.is_err() {
            self.failed = true;
        }
        Some(batch)
    }
}

impl std::iter::FusedIterator for Batches {}

/// How a batch's record timestamps were assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch (every record gets the batch's
    /// max timestamp).
    LogAppendTime,
}

/// The marker a control batch carries (its one record's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMarker {
    /// The transaction was aborted.
    Abort,
    /// The transaction was committed.
    Commit,
    /// Another control type (not defined by the Kafka versions we know).
    Other(i16),
}

impl ControlMarker {
    /// Reads a control record's key: version (i16) and type (i16).
    pub fn from_key(key: &[u8]) -> Option<ControlMarker> {
        let ty = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
        Some(match ty {
            0 => ControlMarker::Abort,
            1 => ControlMarker::Commit,
            other => ControlMarker::Other(other),
        })
    }
}

/// One v2 record batch: its header fields, read in place, and its records, decoded on
/// demand by [`RecordBatch::records`].
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
    limits: DecodeLimits,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("last_offset_delta", &self.last_offset_delta())
            .field("record_count", &self.record_count())
            .field("compression", &self.compression())
            .field("attributes", &self.attributes())
            .field("producer_id", &self.producer_id())
            .field("size", &self.bytes.len())
            .finish()
    }
}

macro_rules! field {
    ($bytes:expr, $t:ty, $at:expr) => {{
        const N: usize = std::mem::size_of::<$t>();
        let mut a = [0u8; N];
        a.copy_from_slice(&$bytes[$at..$at + N]);
        <$t>::from_be_bytes(a)
    }};
}

impl RecordBatch {
    /// Parses exactly one batch (all of `bytes`). The header is checked here: the
    /// length, the magic byte and the codec; the CRC is checked by
    /// [`RecordBatch::verify_crc`].
    ///
    /// # Errors
    /// A [`DecodeError`] naming what is wrong with the header.
    pub fn parse(bytes: Bytes, limits: DecodeLimits) -> Result<RecordBatch, DecodeError> {
        let base_offset = if bytes.len() >= 8 {
            field!(bytes, i64, 0)
        } else {
            -1
        };
        if bytes.len() < BATCH_HEADER_LEN {
            return Err(DecodeError::BatchLength {
                base_offset,
                length: bytes.len().saturating_sub(LOG_OVERHEAD) as i32,
            });
        }
        let length = field!(bytes, i32, 8);
        if length < 0 || LOG_OVERHEAD + length as usize != bytes.len() {
            return Err(DecodeError::BatchLength {
                base_offset,
                length,
            });
        }
        let magic = bytes[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(DecodeError::UnsupportedMagic { base_offset, magic });
        }
        let attributes = field!(bytes, i16, ATTRIBUTES_AT);
        if Compression::from_attributes(attributes).is_none() {
            return Err(DecodeError::UnknownCodec {
                base_offset,
                id: attributes & 0x07,
            });
        }
        Ok(RecordBatch { bytes, limits })
    }

    /// The whole batch as it is on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch's size on the wire, in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The offset of the first record.
    pub fn base_offset(&self) -> i64 {
        field!(self.bytes, i64, 0)
    }

    /// The leader epoch of the partition leader that appended the batch.
    pub fn partition_leader_epoch(&self) -> i32 {
        field!(self.bytes, i32, 12)
    }

    /// The CRC-32C stored in the header.
    pub fn crc(&self) -> u32 {
        field!(self.bytes, u32, CRC_AT)
    }

    /// The raw attributes.
    pub fn attributes(&self) -> i16 {
        field!(self.bytes, i16, ATTRIBUTES_AT)
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes()).unwrap_or_default()
    }

    /// Whether timestamps are the producer's or the broker's.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// True for a batch written inside a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & TRANSACTIONAL_BIT != 0
    }

    /// True for a control batch (a transaction marker, not user records).
    pub fn is_control(&self) -> bool {
        self.attributes() & CONTROL_BIT != 0
    }

    /// The last record's offset minus the base offset.
    pub fn last_offset_delta(&self) -> i32 {
        field!(self.bytes, i32, 23)
    }

    /// The offset of the last record (records removed by compaction included).
    pub fn last_offset(&self) -> i64 {
        self.base_offset()
            .saturating_add(i64::from(self.last_offset_delta()))
    }

    /// The offset after this batch: where a consumer continues.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The first record's timestamp (milliseconds since the epoch).
    pub fn base_timestamp(&self) -> i64 {
        field!(self.bytes, i64, 27)
    }

    /// The largest record timestamp (the append time, for log-append-time batches).
    pub fn max_timestamp(&self) -> i64 {
        field!(self.bytes, i64, 35)
    }

    /// The producer id (-1 without idempotence).
    pub fn producer_id(&self) -> i64 {
        field!(self.bytes, i64, 43)
    }

    /// The producer epoch (-1 without idempotence).
    pub fn producer_epoch(&self) -> i16 {
        field!(self.bytes, i16, 51)
    }

    /// The sequence number of the first record (-1 without idempotence).
    pub fn base_sequence(&self) -> i32 {
        field!(self.bytes, i32, 53)
    }

    /// The number of records the header declares.
    pub fn record_count(&self) -> i32 {
        field!(self.bytes, i32, 57)
    }

    /// Checks the CRC-32C over everything after the CRC field.
    ///
    /// # Errors
    /// [`DecodeError::CrcMismatch`] with both values.
    pub fn verify_crc(&self) -> Result<(), DecodeError> {
        let computed = crc32c::crc32c(&self.bytes[ATTRIBUTES_AT..]);
        let stored = self.crc();
        if computed == stored {
            Ok(())
        } else {
            Err(DecodeError::CrcMismatch {
                base_offset: self.base_offset(),
                stored,
                computed,
            })
        }
    }

    /// The transaction marker of a control batch; `None` for other batches.
    ///
    /// # Errors
    /// As [`RecordBatch::records`].
    pub fn control_marker(&self) -> Result<Option<ControlMarker>, DecodeError> {
        if !self.is_control() {
            return Ok(None);
        }
        match self.records()?.next() {
            Some(record) => Ok(record?.key.as_deref().and_then(ControlMarker::from_key)),
            None => Ok(None),
        }
    }

    /// The batch's records, decompressing them first if the batch is compressed (one
    /// allocation, capped by [`DecodeLimits::max_decompressed_bytes`]).
    ///
    /// # Errors
    /// [`DecodeError::Decompress`] for a codec failure or the size cap;
    /// [`DecodeError::RecordCount`] for a negative count or one the bytes cannot hold.
    pub fn records(&self) -> Result<Records, DecodeError> {
        let base_offset = self.base_offset();
        let section = self.bytes.slice(BATCH_HEADER_LEN..);
        let data = match self.compression() {
            Compression::None => section,
            codec => Bytes::from(
                compression::decompress(codec, &section, self.limits.max_decompressed_bytes)
                    .map_err(|source| DecodeError::Decompress {
                        base_offset,
                        source,
                    })?,
            ),
        };
        let declared = self.record_count();
        if declared < 0 {
            return Err(DecodeError::RecordCount {
                base_offset,
                declared,
                reason: "a count cannot be negative".into(),
            });
        }
        if declared as usize > data.len() / MIN_RECORD_LEN {
            return Err(DecodeError::RecordCount {
                base_offset,
                declared,
                reason: format!("{} bytes of records cannot hold them", data.len()),
            });
        }
        let log_append_time =
            (self.timestamp_type() == TimestampType::LogAppendTime).then(|| self.max_timestamp());
        Ok(Records {
            data,
            pos: 0,
            index: 0,
            declared,
            base_offset,
            base_timestamp: self.base_timestamp(),
            log_append_time,
            done: false,
        })
    }
}

/// Iterator over a batch's records; see [`RecordBatch::records`]. Ends after the first
/// error.
#[derive(Debug, Clone)]
pub struct Records {
    data: Bytes,
    pos: usize,
    index: i32,
    declared: i32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    done: bool,
}

impl Records {
    /// The bytes of the records section the records are read from: the decompressed
    /// buffer of a compressed batch (which the records' keys, values and headers share),
    /// or a slice of the batch itself.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Records not yet yielded, by the batch's count.
    pub fn remaining(&self) -> usize {
        if self.done {
            0
        } else {
            (self.declared - self.index) as usize
        }
    }

    fn fail(&mut self, reason: String) -> DecodeError {
        self.done = true;
        DecodeError::Record {
            base_offset: self.base_offset,
            index: self.index,
            reason,
        }
    }

    fn parse_record(&mut self) -> Result<Record, String> {
        let data = &self.data[..];
        let mut pos = self.pos;
        let len = read_varint(data, &mut pos).map_err(|e| varint_fault("record length", e))?;
        if len < (MIN_RECORD_LEN - 1) as i32 {
            return Err(format!("record length {len} is too small"));
        }
        let end = pos + len as usize;
        if end > data.len() {
            return Err(format!(
                "record length {len}, but only {} bytes remain",
                data.len() - pos
            ));
        }
        let body = &data[..end];
        pos += 1; // attributes: unused in v2
        let ts_delta =
            read_varlong(body, &mut pos).map_err(|e| varint_fault("timestamp delta", e))?;
        let offset_delta =
            read_varint(body, &mut pos).map_err(|e| varint_fault("offset delta", e))?;
        let key = self.bytes_field(body, &mut pos, "key")?;
        let value = self.bytes_field(body, &mut pos, "value")?;
        let header_count =
            read_varint(body, &mut pos).map_err(|e| varint_fault("header count", e))?;
        if header_count < 0 || header_count as usize > (end - pos) / 2 {
            return Err(format!(
                "header count {header_count} does not fit in {} bytes",
                end - pos
            ));
        }
        let headers_at = pos;
        for _ in 0..header_count {
            let name_len =
                read_varint(body, &mut pos).map_err(|e| varint_fault("header name length", e))?;
            if name_len < 0 {
                return Err(format!("header name length {name_len} is negative"));
            }
            pos = skip(body, pos, name_len as usize, "header name")?;
            let value_len =
                read_varint(body, &mut pos).map_err(|e| varint_fault("header value length", e))?;
            match value_len {
                -1 => {}
                n if n < -1 => return Err(format!("header value length {n} is invalid")),
                n => pos = skip(body, pos, n as usize, "header value")?,
            }
        }
        if pos != end {
            return Err(format!(
                "record length {len}, but its fields end {} bytes early",
                end - pos
            ));
        }
        let offset = self
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or_else(|| format!("offset delta {offset_delta} overflows the offset"))?;
        let timestamp_ms = self
            .log_append_time
            .unwrap_or_else(|| self.base_timestamp.wrapping_add(ts_delta));
        let headers = Headers {
            data: self.data.slice(headers_at..end),
            count: header_count,
        };
        self.pos = end;
        Ok(Record {
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        })
    }

    /// A length-prefixed field (-1 for null), as a slice of the batch's buffer.
    fn bytes_field(
        &self,
        body: &[u8],
        pos: &mut usize,
        what: &'static str,
    ) -> Result<Option<Bytes>, String> {
        let len = read_varint(body, pos).map_err(|e| varint_fault(what, e))?;
        match len {
            -1 => Ok(None),
            n if n < -1 => Err(format!("{what} length {n} is invalid")),
            n => {
                let start = *pos;
                *pos = skip(body, start, n as usize, what)?;
                Ok(Some(self.data.slice(start..*pos)))
            }
        }
    }
}

fn skip(body: &[u8], pos: usize, n: usize, what: &str) -> Result<usize, String> {
    let remaining = body.len().saturating_sub(pos);
    if n > remaining {
        return Err(format!(
            "{what} of {n} bytes overruns the record ({remaining} bytes remain)"
        ));
    }
    Ok(pos + n)
}

fn varint_fault(what: &str, e: VarintError) -> String {
    match e {
        VarintError::Truncated => format!("{what} is cut short"),
        VarintError::TooLong => format!("{what} is a malformed varint"),
    }
}

impl Iterator for Records {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.declared {
            self.done = true;
            if self.pos != self.data.len() {
                return Some(Err(DecodeError::RecordCount {
                    base_offset: self.base_offset,
                    declared: self.declared,
                    reason: format!(
                        "{} bytes follow the last record",
                        self.data.len() - self.pos
                    ),
                }));
            }
            return None;
        }
        if self.pos >= self.data.len() {
            self.done = true;
            return Some(Err(DecodeError::RecordCount {
                base_offset: self.base_offset,
                declared: self.declared,
                reason: format!("the records end after {}", self.index),
            }));
        }
        let item = match self.parse_record() {
            Ok(record) => Ok(record),
            Err(reason) => Err(self.fail(reason)),
        };
        self.index += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (0, Some(n + 1))
    }
}

impl std::iter::FusedIterator for Records {}

/// One record. `key`, `value` and the headers are slices of the batch's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Milliseconds since the epoch (see [`RecordBatch::timestamp_type`]).
    pub timestamp_ms: i64,
    /// The key, or `None`.
    pub key: Option<Bytes>,
    /// The value, or `None` (a tombstone).
    pub value: Option<Bytes>,
    headers: Headers,
}

impl Record {
    /// The record's headers, in order: `(name, value)`. Names are not necessarily
    /// UTF-8; values may be null.
    pub fn headers(&self) -> Headers {
        self.headers.clone()
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> usize {
        self.headers.count as usize
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &[u8]) -> Option<Option<Bytes>> {
        self.headers()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// Iterator over a record's headers, already validated when the record was decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    data: Bytes,
    count: i32,
}

impl Iterator for Headers {
    type Item = (Bytes, Option<Bytes>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.count <= 0 {
            return None;
        }
        self.count -= 1;
        // The layout was validated when the record was decoded; should it somehow be
        // wrong, the iteration ends rather than panics.
        let mut pos = 0;
        let name_len = usize::try_from(read_varint(&self.data, &mut pos).ok()?).ok()?;
        let name = self.data.get(pos..pos + name_len)?;
        let name = self.data.slice_ref(name);
        pos += name_len;
        let value_len = read_varint(&self.data, &mut pos).ok()?;
        let value = match usize::try_from(value_len) {
            Ok(n) => {
                let v = self.data.get(pos..pos + n)?;
                let v = self.data.slice_ref(v);
                pos += n;
                Some(v)
            }
            Err(_) => None,
        };
        self.data = self.data.slice(pos..);
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.count.max(0) as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Headers {}
impl std::iter::FusedIterator for Headers {}

#[cfg(test)]
mod tests;
