//! Choosing a partition: the Java client's murmur2 for keyed records, sticky batches for
//! unkeyed ones, or a partitioner of the caller's own.

/// Picks the partition of a record that was sent without one.
///
/// Return `Some(partition)` (in `0..partition_count`) to decide, or `None` to let the
/// producer place the record with its sticky partitioner (as it does for unkeyed
/// records by default).
///
/// ```
/// use paperboy::producer::Partitioner;
///
/// /// Every record of a tenant on one partition, whatever its key.
/// struct ByTenant;
/// impl Partitioner for ByTenant {
///     fn partition(&self, _topic: &str, key: Option<&[u8]>, partition_count: i32) -> Option<i32> {
///         let tenant = key?.split(|b| *b == b'/').next()?;
///         Some(paperboy::producer::murmur2_partition(tenant, partition_count))
///     }
/// }
/// assert_eq!(ByTenant.partition("t", Some(b"acme/1"), 6), ByTenant.partition("t", Some(b"acme/2"), 6));
/// ```
pub trait Partitioner: Send + Sync + 'static {
    /// The partition for a record of `topic` with `key`, given the topic's partition count.
    fn partition(&self, topic: &str, key: Option<&[u8]>, partition_count: i32) -> Option<i32>;
}

/// The default: keyed records go where the Java client puts them
/// (`toPositive(murmur2(key)) % partitions`); unkeyed records are left to the sticky
/// partitioner.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPartitioner;

impl Partitioner for DefaultPartitioner {
    fn partition(&self, _topic: &str, key: Option<&[u8]>, partition_count: i32) -> Option<i32> {
        key.map(|k| murmur2_partition(k, partition_count))
    }
}

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`, seed `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner gives `key`:
/// `(murmur2(key) & 0x7fffffff) % partition_count`.
pub fn murmur2_partition(key: &[u8], partition_count: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partition_count.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's `UtilsTest.testMurmur2` vectors.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (&[12, 42, 56, 24, 109, 111], 274_204_207),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(murmur2_partition(b"foobar", 10), 1_357_151_166 % 10);
    }
}
