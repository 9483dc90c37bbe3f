//! Kafka's variable-length integers, written and read in one place: the unsigned varint of flexible protocol
//! versions (compact lengths), and the zig-zag varint (32-bit) and varlong (64-bit) of record fields.
//!
//! A signed value is zig-zagged to unsigned first and then goes through the same seven-bits-a-byte loop, so that
//! small negative numbers (-1, a null length) stay one byte. Every function here is `#[inline]`: the load
//! generator and the fetch encoder call them once per field from other crates, which cannot inline a
//! non-generic function without it.

use bytes::BufMut;

use super::RecordError;

/// The longest encoding of a u64: ceil(64 / 7) = 10 bytes.
pub const VARLONG_SIZE_MAX: usize = 10;
/// The longest encoding of a u32: ceil(32 / 7) = 5 bytes.
pub const VARINT_SIZE_MAX: usize = 5;

/// Maps 0, -1, 1, -2, … to 0, 1, 2, 3, … so that small magnitudes of either sign encode short.
#[inline]
pub fn zigzag_encode(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
pub fn zigzag_decode(value: u64) -> i64 {
    (value >> 1) as i64 ^ -((value & 1) as i64)
}

/// Bytes `put_varint_unsigned` writes for `value`: one per started group of seven significant bits.
#[inline]
pub fn varint_unsigned_size(value: u64) -> usize {
    // `| 1` gives zero one significant bit, so that it, too, takes one byte.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

#[inline]
pub fn put_varint_unsigned(buffer: &mut (impl BufMut + ?Sized), mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

/// Reads an unsigned varint from the front of `data` and advances past it.
#[inline]
pub fn get_varint_unsigned(data: &mut &[u8]) -> Result<u64, RecordError> {
    let mut value: u64 = 0;
    for index in 0..VARLONG_SIZE_MAX {
        let Some((&byte, rest)) = data.split_first() else {
            return Err(RecordError::new("varint runs past the end of its record"));
        };
        *data = rest;
        // The tenth byte holds bit 63 alone; anything more would not fit in 64 bits.
        if index == VARLONG_SIZE_MAX - 1 && byte > 1 {
            return Err(RecordError(format!("varint's tenth byte {byte:#04x} overflows 64 bits")));
        }
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RecordError::new("varint longer than 10 bytes"))
}

#[inline]
pub fn varlong_size(value: i64) -> usize {
    varint_unsigned_size(zigzag_encode(value))
}

#[inline]
pub fn put_varlong(buffer: &mut (impl BufMut + ?Sized), value: i64) {
    put_varint_unsigned(buffer, zigzag_encode(value));
}

#[inline]
pub fn get_varlong(data: &mut &[u8]) -> Result<i64, RecordError> {
    get_varint_unsigned(data).map(zigzag_decode)
}

/// Kafka's 32-bit zig-zag of an `i32` and the 64-bit zig-zag of the same value widened are the same number, so
/// a varint is a varlong whose value fits in an `i32`.
#[inline]
pub fn varint_size(value: i32) -> usize {
    varlong_size(i64::from(value))
}

#[inline]
pub fn put_varint(buffer: &mut (impl BufMut + ?Sized), value: i32) {
    put_varlong(buffer, i64::from(value));
}

#[inline]
pub fn get_varint(data: &mut &[u8]) -> Result<i32, RecordError> {
    let value = get_varlong(data)?;
    i32::try_from(value).map_err(|_| RecordError(format!("varint {value} does not fit in 32 bits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_round_trips_at_every_width() {
        // Proves put/get/size agree, including the zig-zag extremes, and that each value is read to its end.
        for value in
            [0i64, 1, -1, 63, -64, 64, -65, 300, -300, i32::MAX as i64, i32::MIN as i64, i64::MAX, i64::MIN]
        {
            let mut buffer = Vec::new();
            put_varlong(&mut buffer, value);
            assert_eq!(buffer.len(), varlong_size(value), "size of {value}");
            assert!(buffer.len() <= VARLONG_SIZE_MAX);
            let mut slice = &buffer[..];
            assert_eq!(get_varlong(&mut slice).unwrap(), value);
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn varint_edge_cases_have_kafkas_bytes() {
        // Proves the encodings Kafka's ByteUtils writes for the edge values, and that a varint is read back whole.
        let check = |value: i32, expected: &[u8]| {
            let mut buffer = Vec::new();
            put_varint(&mut buffer, value);
            assert_eq!(buffer, expected, "bytes of {value}");
            assert_eq!(varint_size(value), expected.len(), "size of {value}");
            assert!(buffer.len() <= VARINT_SIZE_MAX);
            let mut slice = &buffer[..];
            assert_eq!(get_varint(&mut slice).unwrap(), value);
            assert!(slice.is_empty());
        };
        check(0, &[0x00]);
        check(-1, &[0x01]);
        check(1, &[0x02]);
        check(i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        check(i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]);
        let mut buffer = Vec::new();
        put_varlong(&mut buffer, i64::MIN);
        assert_eq!(buffer, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        buffer.clear();
        put_varlong(&mut buffer, i64::MAX);
        assert_eq!(buffer, [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn unsigned_varint_sizes_step_every_seven_bits() {
        // Proves the size formula at each byte boundary and the extremes, against what put writes.
        for value in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX >> 1, u64::MAX] {
            let mut buffer = Vec::new();
            put_varint_unsigned(&mut buffer, value);
            assert_eq!(buffer.len(), varint_unsigned_size(value), "size of {value}");
            let mut slice = &buffer[..];
            assert_eq!(get_varint_unsigned(&mut slice).unwrap(), value);
        }
    }

    #[test]
    fn malformed_varints_are_errors() {
        // Proves truncation, an eleventh byte, 64-bit overflow and a varlong read as a varint are refused.
        let mut empty: &[u8] = &[];
        assert!(get_varlong(&mut empty).is_err());
        let mut truncated: &[u8] = &[0x80, 0x80];
        assert!(get_varlong(&mut truncated).is_err());
        let mut too_long: &[u8] = &[0x80; 11];
        assert!(get_varlong(&mut too_long).is_err());
        let mut overflowing: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(get_varlong(&mut overflowing).is_err());
        let mut buffer = Vec::new();
        put_varlong(&mut buffer, i64::from(i32::MAX) + 1);
        let mut wide = &buffer[..];
        assert!(get_varint(&mut wide).is_err());
    }
}
