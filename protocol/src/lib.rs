//! `paperboy-protocol`: Paperboy's wire layer, pure and free of I/O.
//!
//! - [`frame`]: request and response framing over kafka-protocol's generated messages.
//! - [`versions`]: ApiVersions negotiation with the Kafka 4.0 floors.
//! - [`records`]: a record batch v2 codec of our own, lazy and zero-copy over
//!   [`bytes::Bytes`], bounded against hostile input.
//! - [`compression`]: the codecs Kafka uses (gzip, snappy with xerial framing, lz4 frame,
//!   zstd), all in pure Rust, all with a cap on decompressed size.
//!
//! Nothing here opens a socket or spawns a task; the `paperboy` crate does that.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod compression;
pub mod frame;
pub mod records;
pub mod versions;

pub use kafka_protocol;
