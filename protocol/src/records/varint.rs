//! Kafka's zigzag varints (at most 5 bytes) and varlongs (at most 10 bytes).

use bytes::BufMut;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More bytes than the type allows.
    TooLong,
}

/// Reads a zigzag varint (i32) at `*pos`, advancing `*pos`.
#[inline]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, VarintError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = *buf.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        if i == 4 && b > 0x0f {
            return Err(VarintError::TooLong);
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i32) ^ -((value & 1) as i32));
        }
    }
    Err(VarintError::TooLong)
}

/// Reads a zigzag varlong (i64) at `*pos`, advancing `*pos`.
#[inline]
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, VarintError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        if i == 9 && b > 0x01 {
            return Err(VarintError::TooLong);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(VarintError::TooLong)
}

/// Bytes that [`put_varint`] writes for `v`.
#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    varlong_len(i64::from(v))
}

/// Bytes that [`put_varlong`] writes for `v`.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `v` as a zigzag varint.
#[inline]
pub(crate) fn put_varint(out: &mut impl BufMut, v: i32) {
    put_varlong(out, i64::from(v));
}

/// Writes `v` as a zigzag varlong.
#[inline]
pub(crate) fn put_varlong(out: &mut impl BufMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // From Kafka's ByteUtilsTest.
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
        ];
        for (v, bytes) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varlong_len(v), bytes.len());
            let mut pos = 0;
            assert_eq!(read_varlong(bytes, &mut pos), Ok(v));
            let mut pos = 0;
            assert_eq!(read_varint(bytes, &mut pos), Ok(v as i32));
        }
    }

    #[test]
    fn extremes_round_trip_and_overlong_is_refused() {
        for v in [i32::MIN, i32::MAX, -300, 300] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(read_varint(&out, &mut pos), Ok(v));
            assert_eq!(pos, out.len());
        }
        for v in [i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), 10);
            let mut pos = 0;
            assert_eq!(read_varlong(&out, &mut pos), Ok(v));
        }
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos),
            Err(VarintError::TooLong)
        );
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0x80, 0x80], &mut pos),
            Err(VarintError::Truncated)
        );
        let mut pos = 0;
        assert_eq!(
            read_varlong(&[0xff; 11], &mut pos),
            Err(VarintError::TooLong)
        );
    }
}
