//! Encoding records into a v2 batch.

use bytes::{BufMut, Bytes, BytesMut};

use super::varint::{put_varint, put_varlong, varint_len, varlong_len};
use super::{
    ATTRIBUTES_AT, BATCH_HEADER_LEN, CONTROL_BIT, CRC_AT, LOG_OVERHEAD, TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
};
use crate::compression::{self, Compression, CompressionError};

/// A record header to write: a name and an optional value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// The header's name (Kafka's header "key"; UTF-8 by convention).
    pub key: Bytes,
    /// The header's value, or `None` for null.
    pub value: Option<Bytes>,
}

/// A record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The key, or `None`.
    pub key: Option<Bytes>,
    /// The value, or `None` (a tombstone).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<RecordHeader>,
    /// Milliseconds since the epoch; `-1` (the default) means the time of encoding.
    pub timestamp_ms: i64,
}

impl Default for NewRecord {
    fn default() -> Self {
        NewRecord {
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: -1,
        }
    }
}

impl NewRecord {
    /// A record with this key and value, timestamped when encoded.
    pub fn new(key: Option<impl Into<Bytes>>, value: Option<impl Into<Bytes>>) -> NewRecord {
        NewRecord {
            key: key.map(Into::into),
            value: value.map(Into::into),
            ..NewRecord::default()
        }
    }
}

/// The batch-level fields of an encoded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// The first record's offset (0 for a producer; the broker assigns offsets).
    pub base_offset: i64,
    /// The partition leader epoch (-1 for a producer).
    pub partition_leader_epoch: i32,
    /// The codec of the records section.
    pub compression: Compression,
    /// Mark timestamps as the broker's append time (brokers set this; producers do not).
    pub log_append_time: bool,
    /// The idempotent producer's id, or -1.
    pub producer_id: i64,
    /// The idempotent producer's epoch, or -1.
    pub producer_epoch: i16,
    /// The first record's sequence number, or -1.
    pub base_sequence: i32,
    /// Set the transactional attribute.
    pub transactional: bool,
    /// Set the control attribute.
    pub control: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            base_offset: 0,
            partition_leader_epoch: -1,
            compression: Compression::None,
            log_append_time: false,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
        }
    }
}

/// Why records could not be encoded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A batch needs at least one record.
    #[error("a record batch needs at least one record")]
    Empty,
    /// More records than a batch can count.
    #[error("{0} records do not fit in one batch")]
    TooManyRecords(usize),
    /// A record or the batch is larger than the format's 2 GiB lengths allow.
    #[error("record {index}: {what} of {len} bytes exceeds the format's limit")]
    TooLarge {
        /// The record's position.
        index: usize,
        /// The field, or "record" or "batch".
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A timestamp below -1 (Kafka rejects negative timestamps).
    #[error("record {index}: invalid timestamp {timestamp_ms}")]
    InvalidTimestamp {
        /// The record's position.
        index: usize,
        /// The timestamp.
        timestamp_ms: i64,
    },
    /// The codec failed.
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn field_len(field: Option<&Bytes>) -> usize {
    match field {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    }
}

fn put_field(out: &mut impl BufMut, field: Option<&Bytes>) {
    match field {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.put_slice(b);
        }
    }
}

/// Checks the lengths of a record and returns the size of its body (everything after
/// the record's length varint).
fn body_len(index: usize, r: &NewRecord, ts_delta: i64) -> Result<usize, EncodeError> {
    let check = |what: &'static str, len: usize| {
        if len > i32::MAX as usize {
            Err(EncodeError::TooLarge { index, what, len })
        } else {
            Ok(())
        }
    };
    if let Some(k) = &r.key {
        check("key", k.len())?;
    }
    if let Some(v) = &r.value {
        check("value", v.len())?;
    }
    let mut len = 1 // attributes
        + varlong_len(ts_delta)
        + varint_len(index as i32)
        + field_len(r.key.as_ref())
        + field_len(r.value.as_ref())
        + varint_len(r.headers.len() as i32);
    for h in &r.headers {
        check("header name", h.key.len())?;
        if let Some(v) = &h.value {
            check("header value", v.len())?;
        }
        len += field_len(Some(&h.key)) + field_len(h.value.as_ref());
    }
    check("record", len)?;
    Ok(len)
}

fn put_record(out: &mut impl BufMut, index: usize, r: &NewRecord, ts_delta: i64, body: usize) {
    put_varint(out, body as i32);
    out.put_u8(0);
    put_varlong(out, ts_delta);
    put_varint(out, index as i32);
    put_field(out, r.key.as_ref());
    put_field(out, r.value.as_ref());
    put_varint(out, r.headers.len() as i32);
    for h in &r.headers {
        put_field(out, Some(&h.key));
        put_field(out, h.value.as_ref());
    }
}

/// Encodes `records` as one v2 batch appended to `out`, with offsets
/// `opts.base_offset ..` and a CRC-32C over the result. Returns the batch's size.
///
/// # Errors
/// [`EncodeError`] for an empty slice, an invalid timestamp, a field too large for the
/// format, or a codec failure. Nothing is left in `out` on error.
pub fn encode_batch(
    records: &[NewRecord],
    opts: &BatchOptions,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let start = out.len();
    let result = encode_into(records, opts, out, start);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_into(
    records: &[NewRecord],
    opts: &BatchOptions,
    out: &mut BytesMut,
    start: usize,
) -> Result<usize, EncodeError> {
    if records.is_empty() {
        return Err(EncodeError::Empty);
    }
    if records.len() > i32::MAX as usize {
        return Err(EncodeError::TooManyRecords(records.len()));
    }
    let mut now = None;
    let mut timestamp = |index: usize, r: &NewRecord| match r.timestamp_ms {
        -1 => Ok(*now.get_or_insert_with(now_ms)),
        t if t < -1 => Err(EncodeError::InvalidTimestamp {
            index,
            timestamp_ms: t,
        }),
        t => Ok(t),
    };
    let base_ts = timestamp(0, &records[0])?;
    let mut max_ts = base_ts;
    let mut sizes = Vec::with_capacity(records.len());
    let mut section = 0usize;
    for (i, r) in records.iter().enumerate() {
        let ts = timestamp(i, r)?;
        max_ts = max_ts.max(ts);
        let delta = ts.wrapping_sub(base_ts);
        let body = body_len(i, r, delta)?;
        section += varint_len(body as i32) + body;
        sizes.push((delta, body));
    }

    if opts.compression == Compression::None {
        out.reserve(BATCH_HEADER_LEN + section);
        out.put_bytes(0, BATCH_HEADER_LEN);
        for (i, (r, &(delta, body))) in records.iter().zip(&sizes).enumerate() {
            put_record(out, i, r, delta, body);
        }
    } else {
        let mut plain = Vec::with_capacity(section);
        for (i, (r, &(delta, body))) in records.iter().zip(&sizes).enumerate() {
            put_record(&mut plain, i, r, delta, body);
        }
        let mut packed = Vec::with_capacity(section / 2 + 64);
        compression::compress(opts.compression, &plain, &mut packed)?;
        drop(plain);
        // Reserved once the compressed size is known: a batch waiting for its
        // acknowledgement holds what it sends, not its uncompressed size.
        out.reserve(BATCH_HEADER_LEN + packed.len());
        out.put_bytes(0, BATCH_HEADER_LEN);
        out.put_slice(&packed);
    }
    let size = out.len() - start;
    if size - LOG_OVERHEAD > i32::MAX as usize {
        return Err(EncodeError::TooLarge {
            index: 0,
            what: "batch",
            len: size,
        });
    }

    let mut attributes = opts.compression.id();
    if opts.log_append_time {
        attributes |= TIMESTAMP_TYPE_BIT;
    }
    if opts.transactional {
        attributes |= TRANSACTIONAL_BIT;
    }
    if opts.control {
        attributes |= CONTROL_BIT;
    }
    let mut header = &mut out[start..start + BATCH_HEADER_LEN];
    header.put_i64(opts.base_offset);
    header.put_i32((size - LOG_OVERHEAD) as i32);
    header.put_i32(opts.partition_leader_epoch);
    header.put_i8(2);
    header.put_u32(0); // the CRC, below
    header.put_i16(attributes);
    header.put_i32((records.len() - 1) as i32);
    header.put_i64(base_ts);
    header.put_i64(max_ts);
    header.put_i64(opts.producer_id);
    header.put_i16(opts.producer_epoch);
    header.put_i32(opts.base_sequence);
    header.put_i32(records.len() as i32);
    let crc = crc32c::crc32c(&out[start + ATTRIBUTES_AT..]);
    out[start + CRC_AT..start + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(size)
}
