//! Declare an attribute set once as a Rust struct with [`attr_set!`] and
//! get decoding from attributes, encoding to attributes, and JSON both ways
//! (serde). Attributes the declaration does not name are kept, not failed
//! on, and written back when the struct is encoded again.
//!
//! ```
//! use genl_plugin_sdk::{attr_set, AttrWriter};
//! use genl_plugin_sdk::typed::{AttrSet, Be16};
//!
//! attr_set! {
//!     /// An endpoint.
//!     pub struct Endpoint {
//!         1 => family: u16,
//!         2 => id: u8,
//!         3 => addr4: std::net::Ipv4Addr,
//!         5 => port: Be16,
//!     }
//! }
//!
//! let e = Endpoint { family: Some(2), id: Some(7), addr4: Some([192, 0, 2, 1].into()), ..Default::default() };
//! let bytes = e.to_bytes().unwrap();
//! assert_eq!(Endpoint::decode(&bytes).unwrap(), e);
//! assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"family": 2, "id": 7, "addr4": "192.0.2.1"}));
//! ```

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use genl_wire::attr::TooLarge;
use genl_wire::{Attr, AttrWriter, WireError};
use serde::{Deserialize, Serialize};

use crate::hex::{hex, unhex};

/// A type one attribute's payload decodes to and encodes from.
pub trait AttrValue: Sized {
    /// Decode from one attribute.
    fn read(attr: &Attr<'_>) -> Result<Self, WireError>;
    /// Append as attribute `kind`.
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge>;
    /// Fold one occurrence into a field: the last wins, except for
    /// repeated attributes (`Vec<T>`), which collect every occurrence.
    fn merge(slot: &mut Option<Self>, attr: &Attr<'_>) -> Result<(), WireError> {
        *slot = Some(Self::read(attr)?);
        Ok(())
    }
}

/// A whole attribute set (what [`attr_set!`] generates).
pub trait AttrSet: Sized + Default {
    /// Decode every attribute in `bytes`.
    fn decode(bytes: &[u8]) -> Result<Self, WireError>;
    /// Append every attribute to `w`.
    fn encode(&self, w: &mut AttrWriter<'_>) -> Result<(), TooLarge>;
    /// Encode into a fresh buffer.
    fn to_bytes(&self) -> Result<Vec<u8>, TooLarge> {
        let mut w = AttrWriter::new();
        self.encode(&mut w)?;
        Ok(w.finish())
    }
}

macro_rules! native_ints {
    ($($t:ty => $get:ident, $put:expr;)*) => {$(
        impl AttrValue for $t {
            fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
                attr.$get()
            }
            fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
                let put: fn(&mut AttrWriter<'_>, u16, $t) = $put;
                put(w, kind, *self);
                Ok(())
            }
        }
    )*};
}

native_ints! {
    u8 => u8, |w, k, v| { w.put_u8(k, v); };
    u16 => u16, |w, k, v| { w.put_u16(k, v); };
    u32 => u32, |w, k, v| { w.put_u32(k, v); };
    u64 => u64, |w, k, v| { w.put_u64(k, v); };
    i8 => i8, |w, k, v| { let _ = w.put_bytes(k, &v.to_ne_bytes()); };
    i16 => i16, |w, k, v| { let _ = w.put_bytes(k, &v.to_ne_bytes()); };
    i32 => i32, |w, k, v| { w.put_i32(k, v); };
    i64 => i64, |w, k, v| { w.put_i64(k, v); };
}

impl AttrValue for String {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        attr.str().map(str::to_owned)
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        w.put_str(kind, self).map(drop)
    }
}

/// NLA_FLAG: `Some(true)` when present; written only when true.
impl AttrValue for bool {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        attr.flag()
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        if *self {
            w.put_flag(kind);
        }
        Ok(())
    }
}

/// A big-endian u32 address.
impl AttrValue for Ipv4Addr {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        attr.u32_be().map(Ipv4Addr::from)
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        w.put_bytes(kind, &self.octets()).map(drop)
    }
}

/// 16 bytes.
impl AttrValue for Ipv6Addr {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        let b: [u8; 16] = attr.bytes().try_into().map_err(|_| WireError::BadPayload {
            kind: attr.kind(),
            expected: "16-byte IPv6 address",
            len: attr.bytes().len(),
        })?;
        Ok(Ipv6Addr::from(b))
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        w.put_bytes(kind, &self.octets()).map(drop)
    }
}

macro_rules! newtypes {
    ($($(#[$doc:meta])* $name:ident($inner:ty): $read:expr, $write:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl AttrValue for $name {
            fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
                let read: fn(&Attr<'_>) -> Result<$inner, WireError> = $read;
                read(attr).map($name)
            }
            fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
                let write: fn(&mut AttrWriter<'_>, u16, $inner) -> Result<(), TooLarge> = $write;
                write(w, kind, self.0)
            }
        }
    )*};
}

newtypes! {
    /// NLA_UINT: 4 or 8 bytes on the wire.
    Uint(u64): |a| a.uint(), |w, k, v| { w.put_uint(k, v); Ok(()) };
    /// NLA_SINT: 4 or 8 bytes on the wire.
    Sint(i64): |a| a.sint(), |w, k, v| { w.put_sint(k, v); Ok(()) };
    /// A big-endian u16 (ports).
    Be16(u16): |a| a.u16_be(), |w, k, v| w.put_bytes(k, &v.to_be_bytes()).map(drop);
    /// A big-endian u32.
    Be32(u32): |a| a.u32_be(), |w, k, v| w.put_bytes(k, &v.to_be_bytes()).map(drop);
}

/// NLA_BINARY: raw bytes, hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Binary(pub Vec<u8>);

impl AttrValue for Binary {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        Ok(Binary(attr.bytes().to_vec()))
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        w.put_bytes(kind, &self.0).map(drop)
    }
}

impl Serialize for Binary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unhex(&s)
            .map(Binary)
            .ok_or_else(|| serde::de::Error::custom("expected a hex string"))
    }
}

/// A repeated attribute: every occurrence, in order.
impl<T: AttrValue> AttrValue for Vec<T> {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        T::read(attr).map(|v| vec![v])
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        self.iter().try_for_each(|v| v.write(kind, w))
    }
    fn merge(slot: &mut Option<Self>, attr: &Attr<'_>) -> Result<(), WireError> {
        slot.get_or_insert_with(Vec::new).push(T::read(attr)?);
        Ok(())
    }
}

/// NLA_NESTED_ARRAY: one attribute whose entries are each a nested `T`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NestedArray<T>(pub Vec<T>);

impl<T: AttrSet> AttrValue for NestedArray<T> {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        genl_wire::Attrs::new(attr.bytes())
            .map(|e| T::decode(e?.bytes()))
            .collect::<Result<_, _>>()
            .map(NestedArray)
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        let outer = w.begin_nested(kind);
        for (i, entry) in self.0.iter().enumerate() {
            let inner = w.begin_nested(u16::try_from(i + 1).unwrap_or(u16::MAX));
            entry.encode(w)?;
            w.end_nested(inner)?;
        }
        w.end_nested(outer).map(drop)
    }
}

/// Attributes a declaration does not name: kept by number, written back on
/// encode, shown in JSON as `{"N": "hex"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unknown(pub BTreeMap<u16, Vec<Vec<u8>>>);

impl Unknown {
    /// Nothing unknown was seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keep one attribute.
    pub fn keep(&mut self, attr: &Attr<'_>) {
        self.0
            .entry(attr.raw_kind())
            .or_default()
            .push(attr.bytes().to_vec());
    }

    /// Write every kept attribute back.
    pub fn write(&self, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        for (kind, payloads) in &self.0 {
            for p in payloads {
                w.put_bytes(*kind, p)?;
            }
        }
        Ok(())
    }
}

impl Serialize for Unknown {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let map: BTreeMap<String, Vec<String>> = self
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|b| hex(b)).collect()))
            .collect();
        map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Unknown {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, Vec<String>>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let kind: u16 = k.parse().map_err(serde::de::Error::custom)?;
            let payloads = v
                .iter()
                .map(|h| unhex(h).ok_or_else(|| serde::de::Error::custom("expected hex")))
                .collect::<Result<_, _>>()?;
            out.insert(kind, payloads);
        }
        Ok(Unknown(out))
    }
}

/// A nested set as one attribute's value (what `attr_set!` structs use).
#[doc(hidden)]
pub fn write_nested<T: AttrSet>(v: &T, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
    let token = w.begin_nested(kind);
    v.encode(w)?;
    w.end_nested(token).map(drop)
}

/// Declare an attribute set as a struct. Each field is `NUMBER => name:
/// Type` where `Type` implements [`AttrValue`]: integers, `String`, `bool`
/// for flags, `Binary`, `Uint`/`Sint`, `Be16`/`Be32`, IP addresses,
/// `Vec<T>` for a repeated attribute, `NestedArray<T>`, or another
/// `attr_set!` struct (a nested set). Every field is an `Option`; JSON names
/// are the Rust names with `-` for `_`, as in the kernel's YNL specs.
#[macro_export]
macro_rules! attr_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $id:literal => $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, $crate::serde::Serialize, $crate::serde::Deserialize)]
        #[serde(crate = "genl_plugin_sdk::serde", rename_all = "kebab-case")]
        $vis struct $name {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Attributes this declaration does not name.
            #[serde(default, skip_serializing_if = "genl_plugin_sdk::typed::Unknown::is_empty")]
            pub unknown: $crate::typed::Unknown,
        }

        impl $crate::typed::AttrSet for $name {
            fn decode(bytes: &[u8]) -> Result<Self, $crate::wire::WireError> {
                let mut out = Self::default();
                for attr in $crate::Attrs::new(bytes) {
                    let attr = attr?;
                    match attr.kind() {
                        $( $id => <$ty as $crate::typed::AttrValue>::merge(&mut out.$field, &attr)?, )*
                        _ => out.unknown.keep(&attr),
                    }
                }
                Ok(out)
            }

            fn encode(&self, w: &mut $crate::AttrWriter<'_>) -> Result<(), $crate::wire::attr::TooLarge> {
                $(
                    if let Some(v) = &self.$field {
                        <$ty as $crate::typed::AttrValue>::write(v, $id, w)?;
                    }
                )*
                self.unknown.write(w)
            }
        }

        /// As a nested attribute of another set.
        impl $crate::typed::AttrValue for $name {
            fn read(attr: &$crate::Attr<'_>) -> Result<Self, $crate::wire::WireError> {
                <Self as $crate::typed::AttrSet>::decode(attr.bytes())
            }
            fn write(&self, kind: u16, w: &mut $crate::AttrWriter<'_>) -> Result<(), $crate::wire::attr::TooLarge> {
                $crate::typed::write_nested(self, kind, w)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    crate::attr_set! {
        struct Inner {
            1 => index: u32,
            2 => name: String,
            3 => on: bool,
        }
    }

    crate::attr_set! {
        struct Outer {
            1 => inner: Inner,
            2 => tags: Vec<u16>,
            3 => list: NestedArray<Inner>,
            4 => blob: Binary,
            5 => big: Uint,
            6 => port: Be16,
        }
    }

    #[test]
    fn round_trips_nested_repeated_arrays_and_json() {
        let v = Outer {
            inner: Some(Inner {
                index: Some(3),
                name: Some("eth0".into()),
                on: Some(true),
                ..Default::default()
            }),
            tags: Some(vec![1, 2, 3]),
            list: Some(NestedArray(vec![Inner {
                index: Some(9),
                ..Default::default()
            }])),
            blob: Some(Binary(vec![0xde, 0xad])),
            big: Some(Uint(1 << 40)),
            port: Some(Be16(443)),
            ..Default::default()
        };
        let bytes = v.to_bytes().unwrap();
        assert_eq!(Outer::decode(&bytes).unwrap(), v);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j,
            json!({"inner": {"index": 3, "name": "eth0", "on": true}, "tags": [1, 2, 3],
                   "list": [{"index": 9}], "blob": "dead", "big": 1u64 << 40, "port": 443})
        );
        assert_eq!(serde_json::from_value::<Outer>(j).unwrap(), v);
    }

    #[test]
    fn unknown_attributes_are_kept_and_written_back() {
        let mut w = AttrWriter::new();
        w.put_u32(1, 7).put_u64(42, 5);
        let bytes = w.finish();
        let inner = Inner::decode(&bytes).unwrap();
        assert_eq!(inner.index, Some(7));
        assert_eq!(
            serde_json::to_value(&inner).unwrap()["unknown"],
            json!({"42": ["0500000000000000"]})
        );
        assert_eq!(inner.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut w = AttrWriter::new();
        w.put_u8(1, 7); // index is a u32
        assert!(Inner::decode(&w.finish()).is_err());
        assert!(Inner::decode(&[9, 0, 1]).is_err());
    }
}
