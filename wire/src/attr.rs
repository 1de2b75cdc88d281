//! Netlink attributes (`struct nlattr`): a 4-byte header (length, type)
//! followed by the payload, padded to 4 bytes.
//!
//! [`Attrs`] iterates a buffer of attributes without copying; [`Attr`] has
//! typed getters for every NLA type. [`AttrWriter`] appends attributes,
//! nested sets included, to a byte vector.

use crate::consts::{NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLA_TYPE_MASK};
use crate::{WireError, align4};

/// Size of `struct nlattr`.
pub const ATTR_HEADER: usize = 4;

/// An iterator over the attributes in a buffer. Yields an error (once, then
/// stops) if an attribute header is truncated or its length runs past the
/// end of the buffer.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Attrs<'a> {
    /// Iterate the attributes in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            rest: buf,
            failed: false,
        }
    }

    /// The first attribute of type `kind`, if any; malformed input is an error.
    pub fn find(self, kind: u16) -> Result<Option<Attr<'a>>, WireError> {
        for attr in self {
            let attr = attr?;
            if attr.kind() == kind {
                return Ok(Some(attr));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let rest = self.rest;
        let step = (|| {
            let head = rest.get(..ATTR_HEADER).ok_or(WireError::Truncated {
                what: "attribute header",
                need: ATTR_HEADER,
                have: rest.len(),
            })?;
            let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
            let raw_kind = u16::from_ne_bytes([head[2], head[3]]);
            if len < ATTR_HEADER || len > rest.len() {
                return Err(WireError::BadLength {
                    what: "attribute",
                    len,
                    available: rest.len(),
                });
            }
            let attr = Attr {
                raw_kind,
                payload: &rest[ATTR_HEADER..len],
            };
            // The last attribute may omit its padding.
            let next = align4(len).min(rest.len());
            Ok((attr, &rest[next..]))
        })();
        match step {
            Ok((attr, rest)) => {
                self.rest = rest;
                Some(Ok(attr))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// One attribute, borrowed from the message buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    raw_kind: u16,
    payload: &'a [u8],
}

macro_rules! fixed_getters {
    ($($(#[$doc:meta])* $name:ident, $be_name:ident => $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> Result<$ty, WireError> {
            Ok(<$ty>::from_ne_bytes(self.fixed::<{ size_of::<$ty>() }>(stringify!($ty))?))
        }

        /// Big-endian (network byte order) variant.
        pub fn $be_name(&self) -> Result<$ty, WireError> {
            Ok(<$ty>::from_be_bytes(self.fixed::<{ size_of::<$ty>() }>(stringify!($ty))?))
        }
    )*};
}

impl<'a> Attr<'a> {
    /// Build an attribute view from its parts (for tests and re-encoding).
    pub fn from_parts(raw_kind: u16, payload: &'a [u8]) -> Self {
        Self { raw_kind, payload }
    }

    /// The attribute type with the NESTED and NET_BYTEORDER bits removed.
    pub fn kind(&self) -> u16 {
        self.raw_kind & NLA_TYPE_MASK
    }

    /// The type field as on the wire, flags included.
    pub fn raw_kind(&self) -> u16 {
        self.raw_kind
    }

    /// Whether the sender marked the payload as a nested set.
    pub fn is_nested_flag(&self) -> bool {
        self.raw_kind & NLA_F_NESTED != 0
    }

    /// Whether the sender marked the payload as network byte order.
    pub fn is_net_byteorder(&self) -> bool {
        self.raw_kind & NLA_F_NET_BYTEORDER != 0
    }

    /// The payload bytes (NLA_BINARY, NLA_UNSPEC).
    pub fn bytes(&self) -> &'a [u8] {
        self.payload
    }

    fn fixed<const N: usize>(&self, expected: &'static str) -> Result<[u8; N], WireError> {
        self.payload.try_into().map_err(|_| WireError::BadPayload {
            kind: self.kind(),
            expected,
            len: self.payload.len(),
        })
    }

    fixed_getters! {
        /// NLA_U8.
        u8, u8_be => u8;
        /// NLA_U16.
        u16, u16_be => u16;
        /// NLA_U32.
        u32, u32_be => u32;
        /// NLA_U64.
        u64, u64_be => u64;
        /// NLA_S8.
        i8, i8_be => i8;
        /// NLA_S16.
        i16, i16_be => i16;
        /// NLA_S32.
        i32, i32_be => i32;
        /// NLA_S64.
        i64, i64_be => i64;
    }

    /// NLA_UINT: an unsigned value of 4 or 8 bytes (the kernel picks the
    /// smaller that fits); older kernels also send 1 or 2 bytes for some.
    pub fn uint(&self) -> Result<u64, WireError> {
        match self.payload.len() {
            1 => self.u8().map(u64::from),
            2 => self.u16().map(u64::from),
            4 => self.u32().map(u64::from),
            8 => self.u64(),
            len => Err(WireError::BadPayload {
                kind: self.kind(),
                expected: "uint of 1, 2, 4 or 8 bytes",
                len,
            }),
        }
    }

    /// NLA_SINT: a signed value of 4 or 8 bytes.
    pub fn sint(&self) -> Result<i64, WireError> {
        match self.payload.len() {
            1 => self.i8().map(i64::from),
            2 => self.i16().map(i64::from),
            4 => self.i32().map(i64::from),
            8 => self.i64(),
            len => Err(WireError::BadPayload {
                kind: self.kind(),
                expected: "sint of 1, 2, 4 or 8 bytes",
                len,
            }),
        }
    }

    /// NLA_NUL_STRING or NLA_STRING: UTF-8 text up to the first NUL (a
    /// missing terminator is accepted, as the kernel does for NLA_STRING).
    pub fn str(&self) -> Result<&'a str, WireError> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end]).map_err(|_| WireError::BadString { kind: self.kind() })
    }

    /// NLA_FLAG: present means true; the payload must be empty.
    pub fn flag(&self) -> Result<bool, WireError> {
        if self.payload.is_empty() {
            Ok(true)
        } else {
            Err(WireError::BadPayload {
                kind: self.kind(),
                expected: "empty flag",
                len: self.payload.len(),
            })
        }
    }

    /// NLA_BITFIELD32: (value, selector).
    pub fn bitfield32(&self) -> Result<(u32, u32), WireError> {
        let b = self.fixed::<8>("bitfield32")?;
        Ok((
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        ))
    }

    /// NLA_NESTED: the attributes inside this one.
    pub fn nested(&self) -> Nested<'a> {
        Attrs::new(self.payload)
    }

    /// NLA_NESTED_ARRAY: the inner attributes are the array's entries, each
    /// a nested set; their types are indexes the kernel assigns (1-based,
    /// sometimes 0-based) and carry no meaning.
    pub fn nested_array(&self) -> impl Iterator<Item = Result<Nested<'a>, WireError>> + 'a {
        Attrs::new(self.payload).map(|entry| entry.map(|e| e.nested()))
    }
}

/// A nested attribute set: itself an iterator of attributes.
pub type Nested<'a> = Attrs<'a>;

/// Appends attributes to a byte vector. Nested sets are opened with
/// [`AttrWriter::begin_nested`] and closed with [`AttrWriter::end_nested`],
/// which patches the length in.
#[derive(Debug, Default)]
pub struct AttrWriter<'a> {
    buf: Option<&'a mut Vec<u8>>,
    owned: Vec<u8>,
}

/// A nested attribute that is open; pass it to [`AttrWriter::end_nested`].
#[derive(Debug)]
#[must_use = "a nested attribute must be closed with end_nested"]
pub struct NestToken(usize);

/// Why an attribute could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute {kind} is {len} bytes, over netlink's 65535-byte limit")]
pub struct TooLarge {
    /// The attribute's type.
    pub kind: u16,
    /// Its length, header included.
    pub len: usize,
}

impl<'a> AttrWriter<'a> {
    /// A writer that owns its buffer; take it with [`AttrWriter::finish`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that appends to `buf` (after a header already in it).
    pub fn append_to(buf: &'a mut Vec<u8>) -> Self {
        Self {
            buf: Some(buf),
            owned: Vec::new(),
        }
    }

    fn buf(&mut self) -> &mut Vec<u8> {
        match &mut self.buf {
            Some(b) => b,
            None => &mut self.owned,
        }
    }

    /// The bytes written (for an owning writer).
    pub fn finish(self) -> Vec<u8> {
        self.owned
    }

    /// Append an attribute with a raw payload.
    pub fn put_bytes(&mut self, kind: u16, payload: &[u8]) -> Result<&mut Self, TooLarge> {
        let len = ATTR_HEADER + payload.len();
        let len16 = u16::try_from(len).map_err(|_| TooLarge { kind, len })?;
        let buf = self.buf();
        buf.extend_from_slice(&len16.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(buf.len() + (align4(len) - len), 0);
        Ok(self)
    }

    /// NLA_U8.
    pub fn put_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.put_small(kind, &[v])
    }
    /// NLA_U16.
    pub fn put_u16(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put_small(kind, &v.to_ne_bytes())
    }
    /// NLA_U32.
    pub fn put_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put_small(kind, &v.to_ne_bytes())
    }
    /// NLA_U64.
    pub fn put_u64(&mut self, kind: u16, v: u64) -> &mut Self {
        self.put_small(kind, &v.to_ne_bytes())
    }
    /// NLA_S32.
    pub fn put_i32(&mut self, kind: u16, v: i32) -> &mut Self {
        self.put_small(kind, &v.to_ne_bytes())
    }
    /// NLA_S64.
    pub fn put_i64(&mut self, kind: u16, v: i64) -> &mut Self {
        self.put_small(kind, &v.to_ne_bytes())
    }
    /// Big-endian NLA_U16 (ports, protocol numbers).
    pub fn put_u16_be(&mut self, kind: u16, v: u16) -> &mut Self {
        self.put_small(kind | NLA_F_NET_BYTEORDER, &v.to_be_bytes())
    }
    /// Big-endian NLA_U32 (IPv4 addresses).
    pub fn put_u32_be(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put_small(kind | NLA_F_NET_BYTEORDER, &v.to_be_bytes())
    }
    /// NLA_UINT: 4 bytes when the value fits, else 8, as the kernel does.
    pub fn put_uint(&mut self, kind: u16, v: u64) -> &mut Self {
        match u32::try_from(v) {
            Ok(v) => self.put_u32(kind, v),
            Err(_) => self.put_u64(kind, v),
        }
    }
    /// NLA_SINT: 4 bytes when the value fits, else 8.
    pub fn put_sint(&mut self, kind: u16, v: i64) -> &mut Self {
        match i32::try_from(v) {
            Ok(v) => self.put_i32(kind, v),
            Err(_) => self.put_i64(kind, v),
        }
    }
    /// NLA_FLAG.
    pub fn put_flag(&mut self, kind: u16) -> &mut Self {
        self.put_small(kind, &[])
    }

    /// NLA_NUL_STRING (also accepted where NLA_STRING is expected).
    pub fn put_str(&mut self, kind: u16, s: &str) -> Result<&mut Self, TooLarge> {
        let len = ATTR_HEADER + s.len() + 1;
        let len16 = u16::try_from(len).map_err(|_| TooLarge { kind, len })?;
        let buf = self.buf();
        buf.extend_from_slice(&len16.to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
        buf.resize(buf.len() + (align4(len) - len), 0);
        Ok(self)
    }

    fn put_small(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        // Payloads of at most 8 bytes always fit in an attribute.
        let len = ATTR_HEADER + payload.len();
        let buf = self.buf();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(payload);
        buf.resize(buf.len() + (align4(len) - len), 0);
        self
    }

    /// Open a nested set (NLA_F_NESTED is set, as strict kernels require).
    pub fn begin_nested(&mut self, kind: u16) -> NestToken {
        let buf = self.buf();
        let start = buf.len();
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        NestToken(start)
    }

    /// Close a nested set, writing its length.
    pub fn end_nested(&mut self, token: NestToken) -> Result<&mut Self, TooLarge> {
        let buf = self.buf();
        let len = buf.len() - token.0;
        let kind = u16::from_ne_bytes([buf[token.0 + 2], buf[token.0 + 3]]) & NLA_TYPE_MASK;
        let len16 = u16::try_from(len).map_err(|_| TooLarge { kind, len })?;
        buf[token.0..token.0 + 2].copy_from_slice(&len16.to_ne_bytes());
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_every_scalar() {
        let mut w = AttrWriter::new();
        w.put_u8(1, 0xab)
            .put_u16(2, 0xbeef)
            .put_u32(3, 0xdead_beef)
            .put_u64(4, u64::MAX - 1)
            .put_i32(5, -5)
            .put_i64(6, i64::MIN)
            .put_u16_be(7, 443)
            .put_uint(8, 1 << 40)
            .put_sint(9, -3)
            .put_flag(10);
        w.put_str(11, "eth0").unwrap();
        let buf = w.finish();
        let attrs: Vec<_> = Attrs::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs.len(), 11);
        assert_eq!(attrs[0].u8(), Ok(0xab));
        assert_eq!(attrs[1].u16(), Ok(0xbeef));
        assert_eq!(attrs[2].u32(), Ok(0xdead_beef));
        assert_eq!(attrs[3].u64(), Ok(u64::MAX - 1));
        assert_eq!(attrs[4].i32(), Ok(-5));
        assert_eq!(attrs[5].i64(), Ok(i64::MIN));
        assert!(attrs[6].is_net_byteorder());
        assert_eq!(attrs[6].kind(), 7);
        assert_eq!(attrs[6].u16_be(), Ok(443));
        assert_eq!(attrs[7].uint(), Ok(1 << 40));
        assert_eq!(attrs[8].sint(), Ok(-3));
        assert_eq!(attrs[9].flag(), Ok(true));
        assert_eq!(attrs[10].str(), Ok("eth0"));
        assert_eq!(
            attrs[0].u32().unwrap_err().to_string(),
            "attribute 1: expected u32, payload has 1 bytes"
        );
    }

    #[test]
    fn nested_sets_and_arrays() {
        let mut w = AttrWriter::new();
        let outer = w.begin_nested(1);
        for i in 0..3u32 {
            let entry = w.begin_nested(i as u16 + 1);
            w.put_u32(1, i * 10);
            w.end_nested(entry).unwrap();
        }
        w.end_nested(outer).unwrap();
        let buf = w.finish();
        let outer = Attrs::new(&buf).next().unwrap().unwrap();
        assert!(outer.is_nested_flag());
        let values: Vec<u32> = outer
            .nested_array()
            .map(|e| e.unwrap().find(1).unwrap().unwrap().u32().unwrap())
            .collect();
        assert_eq!(values, [0, 10, 20]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // Length past the end.
        let bad = [200u8, 0, 1, 0, 0, 0, 0, 0];
        let mut it = Attrs::new(&bad);
        assert!(matches!(it.next(), Some(Err(WireError::BadLength { .. }))));
        assert!(it.next().is_none());
        // Length below the header size.
        assert!(Attrs::new(&[2, 0, 1, 0]).next().unwrap().is_err());
        // Truncated header.
        assert!(Attrs::new(&[8, 0]).next().unwrap().is_err());
        // Every prefix of a valid buffer either parses or errors.
        let mut w = AttrWriter::new();
        w.put_str(1, "hello").unwrap();
        w.put_u64(2, 9);
        let buf = w.finish();
        for cut in 0..buf.len() {
            for a in Attrs::new(&buf[..cut]) {
                let _ = a.map(|a| a.str());
            }
        }
    }

    #[test]
    fn unpadded_last_attribute_is_accepted() {
        let buf = [5u8, 0, 1, 0, 7];
        let a = Attrs::new(&buf).next().unwrap().unwrap();
        assert_eq!(a.u8(), Ok(7));
    }
}
