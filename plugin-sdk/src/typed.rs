//! Declare an attribute set once as a Rust struct with [`attr_set!`] and
//! get decoding from attributes, encoding to attributes, and JSON both ways
//! (serde). Attributes the declaration does not name are kept when decoding
//! (shown as `"attr-N": "hex"`, as the YNL engine and the table codec show
//! them) and written back when the struct is encoded again.
//!
//! Client input reaches a struct only through [`AttrSet::from_input`] (which
//! `serde_json::from_value` also uses): the one input path of
//! [`crate::input`], so an undeclared key, `unknown` included, is refused
//! with its JSON path, and input can never add raw attributes.
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
use serde_json::Value;

use crate::hex::{hex, unhex};
use crate::input::{InputDef, InputSpec};
use crate::ynl::{AttrKind, EncodeError};

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
    /// How the value is given in client JSON. A type that does not say is
    /// refused as input.
    fn input(spec: &mut InputSpec) -> InputDef {
        let _ = spec;
        InputDef::refused()
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
    /// Declare the set's attributes for the input path; returns its name.
    /// A set that does not declare them accepts no input keys.
    fn input_set(spec: &mut InputSpec) -> String {
        spec.set(std::any::type_name::<Self>(), |_| Vec::new())
    }
    /// Build the set from a client's JSON: every key must be a declared
    /// attribute and every value fit its type; errors name the JSON path.
    fn from_input(input: &Value) -> Result<Self, EncodeError> {
        let bytes = crate::input::encode_cached(std::any::type_name::<Self>(), Self::input_set, input)?;
        Self::decode(&bytes).map_err(|e| EncodeError {
            path: "$".into(),
            message: e.to_string(),
        })
    }
}

macro_rules! native_ints {
    ($($t:ty => $get:ident, $kind:ident, $put:expr;)*) => {$(
        impl AttrValue for $t {
            fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
                attr.$get()
            }
            fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
                let put: fn(&mut AttrWriter<'_>, u16, $t) = $put;
                put(w, kind, *self);
                Ok(())
            }
            fn input(_: &mut InputSpec) -> InputDef {
                InputDef::kind(AttrKind::$kind)
            }
        }
    )*};
}

native_ints! {
    u8 => u8, U8, |w, k, v| { w.put_u8(k, v); };
    u16 => u16, U16, |w, k, v| { w.put_u16(k, v); };
    u32 => u32, U32, |w, k, v| { w.put_u32(k, v); };
    u64 => u64, U64, |w, k, v| { w.put_u64(k, v); };
    i8 => i8, S8, |w, k, v| { let _ = w.put_bytes(k, &v.to_ne_bytes()); };
    i16 => i16, S16, |w, k, v| { let _ = w.put_bytes(k, &v.to_ne_bytes()); };
    i32 => i32, S32, |w, k, v| { w.put_i32(k, v); };
    i64 => i64, S64, |w, k, v| { w.put_i64(k, v); };
}

impl AttrValue for String {
    fn read(attr: &Attr<'_>) -> Result<Self, WireError> {
        attr.str().map(str::to_owned)
    }
    fn write(&self, kind: u16, w: &mut AttrWriter<'_>) -> Result<(), TooLarge> {
        w.put_str(kind, self).map(drop)
    }
    fn input(_: &mut InputSpec) -> InputDef {
        InputDef::kind(AttrKind::String)
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
    fn input(_: &mut InputSpec) -> InputDef {
        InputDef::kind(AttrKind::Flag)
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
    fn input(_: &mut InputSpec) -> InputDef {
        InputDef::address(false)
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
    fn input(_: &mut InputSpec) -> InputDef {
        InputDef::address(true)
    }
}

macro_rules! newtypes {
    ($($(#[$doc:meta])* $name:ident($inner:ty): $input:expr, $read:expr, $write:expr;)*) => {$(
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
            fn input(_: &mut InputSpec) -> InputDef {
                $input
            }
        }
    )*};
}

newtypes! {
    /// NLA_UINT: 4 or 8 bytes on the wire.
    Uint(u64): InputDef::kind(AttrKind::Uint), |a| a.uint(), |w, k, v| { w.put_uint(k, v); Ok(()) };
    /// NLA_SINT: 4 or 8 bytes on the wire.
    Sint(i64): InputDef::kind(AttrKind::Sint), |a| a.sint(), |w, k, v| { w.put_sint(k, v); Ok(()) };
    /// A big-endian u16 (ports).
    Be16(u16): InputDef::big_endian(AttrKind::U16), |a| a.u16_be(), |w, k, v| w.put_bytes(k, &v.to_be_bytes()).map(drop);
    /// A big-endian u32.
    Be32(u32): InputDef::big_endian(AttrKind::U32), |a| a.u32_be(), |w, k, v| w.put_bytes(k, &v.to_be_bytes()).map(drop);
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
    fn input(_: &mut InputSpec) -> InputDef {
        InputDef::kind(AttrKind::Binary)
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
    fn input(spec: &mut InputSpec) -> InputDef {
        T::input(spec).repeated()
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
    fn input(spec: &mut InputSpec) -> InputDef {
        InputDef::nested_array(T::input_set(spec))
    }
}

/// Attributes a declaration does not name: kept by number when decoding,
/// written back on encode, shown in JSON as `"attr-N": "hex"` beside the
/// declared keys (an array of hex strings when repeated), the form the YNL
/// engine and the table codec use. Never built from client input.
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
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (kind, payloads) in &self.0 {
            // The number without NLA_F_NESTED / NLA_F_NET_BYTEORDER, as the
            // other codecs name it.
            let key = crate::ynl::unknown_key(kind & genl_wire::consts::NLA_TYPE_MASK);
            match payloads.as_slice() {
                [one] => m.serialize_entry(&key, &hex(one))?,
                many => m.serialize_entry(&key, &many.iter().map(|b| hex(b)).collect::<Vec<_>>())?,
            }
        }
        m.end()
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
        #[derive(Debug, Clone, Default, PartialEq, $crate::serde::Serialize)]
        #[serde(crate = "genl_plugin_sdk::serde", rename_all = "kebab-case")]
        $vis struct $name {
            $(
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            /// Attributes this declaration does not name, seen when
            /// decoding (never from client input).
            #[serde(flatten)]
            pub unknown: $crate::typed::Unknown,
        }

        /// Client JSON, through the one input path ([`AttrSet::from_input`]).
        impl<'de> $crate::serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = <$crate::serde_json::Value as $crate::serde::Deserialize>::deserialize(d)?;
                <Self as $crate::typed::AttrSet>::from_input(&v)
                    .map_err(<D::Error as $crate::serde::de::Error>::custom)
            }
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

            fn input_set(spec: &mut $crate::input::InputSpec) -> String {
                spec.set(std::any::type_name::<Self>(), |spec| {
                    vec![$(
                        (
                            $id,
                            $crate::input::json_name(stringify!($field)),
                            <$ty as $crate::typed::AttrValue>::input(spec),
                        ),
                    )*]
                })
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
            fn input(spec: &mut $crate::input::InputSpec) -> $crate::input::InputDef {
                $crate::input::InputDef::nest(<Self as $crate::typed::AttrSet>::input_set(spec))
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
            serde_json::to_value(&inner).unwrap(),
            json!({"index": 7, "attr-42": "0500000000000000"})
        );
        assert_eq!(inner.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn client_input_cannot_add_attributes() {
        // The issue's example: an op meant to send only an index.
        for bad in [
            json!({"index": 1, "unknown": {"5": ["deadbeef"]}}),
            json!({"index": 1, "attr-5": "deadbeef"}),
            json!({"idnex": 1}),
        ] {
            let e = Inner::from_input(&bad).unwrap_err();
            assert!(
                e.message.starts_with("unknown key; accepted: index, name, on"),
                "{e}"
            );
            let via_serde = serde_json::from_value::<Inner>(bad).unwrap_err().to_string();
            assert!(via_serde.contains("unknown key"), "{via_serde}");
        }
        let e = Inner::from_input(&json!({"index": 1, "unknown": {}})).unwrap_err();
        assert_eq!(e.path, "$.unknown");
    }

    #[test]
    fn input_errors_name_the_json_path() {
        let e = Outer::from_input(&json!({"inner": {"index": "x"}})).unwrap_err();
        assert_eq!(e.path, "$.inner.index");
        let e = Outer::from_input(&json!({"list": [{"index": 1}, {"oops": 2}]})).unwrap_err();
        assert_eq!(e.path, "$.list[1].oops");
        let e = Outer::from_input(&json!({"port": 70000})).unwrap_err();
        assert_eq!(e.path, "$.port");
        let e = Outer::from_input(&json!({"blob": "xyz"})).unwrap_err();
        assert_eq!(e.path, "$.blob");
        assert!(e.message.contains("hex"), "{e}");
    }

    #[test]
    fn input_builds_what_the_declaration_describes() {
        let v = json!({"inner": {"index": 3, "name": "eth0", "on": true}, "tags": [1, 2, 3],
                       "list": [{"index": 9}], "blob": "dead", "big": 1u64 << 40, "port": 443});
        let o = Outer::from_input(&v).unwrap();
        assert!(o.unknown.is_empty());
        assert_eq!(serde_json::to_value(&o).unwrap(), v);
        // The struct's own bytes carry the big-endian port as the kernel reads it.
        let bytes = o.to_bytes().unwrap();
        assert!(bytes.windows(2).any(|w| w == 443u16.to_be_bytes()));
    }

    #[test]
    fn sdk_errors_convert_with_question_mark_inside_call() {
        fn call(input: &Value) -> Result<Vec<u8>, crate::CallError> {
            let set = Inner::from_input(input)?;
            let mut bytes = set.to_bytes()?;
            bytes.extend(crate::schema::encode(input, &[])?);
            Inner::decode(&bytes)?;
            Ok(bytes)
        }
        assert_eq!(call(&json!({"x": 1})).unwrap_err().code, "bad-input");
        let big = Inner {
            name: Some("x".repeat(70_000)),
            ..Default::default()
        };
        let e = crate::CallError::from(big.to_bytes().unwrap_err());
        assert_eq!(e.code, "bad-input");
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut w = AttrWriter::new();
        w.put_u8(1, 7); // index is a u32
        assert!(Inner::decode(&w.finish()).is_err());
        assert!(Inner::decode(&[9, 0, 1]).is_err());
    }
}
