//! Declare a family's attribute sets once, as tables of [`Field`]s, and get
//! decoding to JSON and encoding from JSON for free.
//!
//! ```
//! use genl_plugin_sdk::schema::{Field, Kind, decode, encode};
//! use serde_json::json;
//!
//! const HEADER: &[Field] = &[Field::new(1, "dev-index", Kind::U32), Field::new(2, "dev-name", Kind::Str)];
//! const RINGS: &[Field] = &[Field::new(1, "header", Kind::Nested(HEADER)), Field::new(6, "rx", Kind::U32)];
//!
//! let bytes = encode(&json!({"header": {"dev-name": "ifb0"}, "rx": 512}), RINGS).unwrap();
//! let back = decode(&bytes, RINGS).unwrap();
//! assert_eq!(back, json!({"header": {"dev-name": "ifb0"}, "rx": 512}));
//! ```
//!
//! Decoding never fails on attributes the table does not know (newer
//! kernels add them): they are kept as `"attr-N": "hex"`. An attribute that
//! appears more than once becomes a JSON array.

use serde_json::{Map, Value};

use genl_wire::{AttrWriter, Attrs, WireError};

use crate::hex::hex;
use crate::input::{InputDef, InputSpec};
use crate::ynl::AttrKind;

/// How an attribute's payload is typed.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// NLA_U8.
    U8,
    /// NLA_U16.
    U16,
    /// NLA_U32.
    U32,
    /// NLA_U64.
    U64,
    /// NLA_S8.
    S8,
    /// NLA_S16.
    S16,
    /// NLA_S32.
    S32,
    /// NLA_S64.
    S64,
    /// NLA_UINT (4 or 8 bytes).
    Uint,
    /// NLA_SINT (4 or 8 bytes).
    Sint,
    /// Big-endian u16 (ports).
    U16Be,
    /// Big-endian u32.
    U32Be,
    /// A big-endian u32 shown as a dotted IPv4 address.
    Ipv4,
    /// 16 bytes shown as an IPv6 address.
    Ipv6,
    /// NLA_STRING / NLA_NUL_STRING.
    Str,
    /// NLA_BINARY, shown as hex.
    Binary,
    /// NLA_FLAG, shown as `true`.
    Flag,
    /// NLA_BITFIELD32, shown as `{"value", "selector"}`.
    Bitfield32,
    /// A nested set with its own fields.
    Nested(&'static [Field]),
    /// An array of nested sets, each with these fields.
    NestedArray(&'static [Field]),
}

/// One attribute of a set: its number, its JSON name, its type.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Attribute number.
    pub id: u16,
    /// JSON key (the name the kernel's YNL spec uses).
    pub name: &'static str,
    /// Payload type.
    pub kind: Kind,
    /// Repeated by definition: always decoded as a JSON array, even when
    /// it occurs once.
    pub multi: bool,
}

impl Field {
    /// A field (usable in `const` tables).
    pub const fn new(id: u16, name: &'static str, kind: Kind) -> Self {
        Self {
            id,
            name,
            kind,
            multi: false,
        }
    }

    /// Mark the field as repeated (e.g. ethtool's bitset `bit`).
    pub const fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
}

/// Why JSON could not be encoded: the JSON path of the bad field and what
/// would be accepted (the same error as every other codec's input).
pub use crate::ynl::EncodeError;

/// Decode the attributes in `bytes` with `fields`.
pub fn decode(bytes: &[u8], fields: &[Field]) -> Result<Value, WireError> {
    let mut out = Map::new();
    // Keys seen more than once: their value is the array of occurrences.
    let mut repeated: Vec<String> = Vec::new();
    for attr in Attrs::new(bytes) {
        let attr = attr?;
        let field = fields.iter().find(|f| f.id == attr.kind());
        let (key, value) = match field {
            Some(f) => (f.name.to_owned(), decode_value(&attr, f.kind)?),
            None => (format!("attr-{}", attr.kind()), Value::String(hex(attr.bytes()))),
        };
        let Some(slot) = out.get_mut(&key) else {
            let value = if field.is_some_and(|f| f.multi) {
                Value::Array(vec![value])
            } else {
                value
            };
            out.insert(key, value);
            continue;
        };
        match (field.map(|f| f.kind), slot, value) {
            // A nested array split over several attributes: one array.
            (Some(Kind::NestedArray(_)), Value::Array(list), Value::Array(more)) => list.extend(more),
            (_, Value::Array(list), value) if repeated.contains(&key) || field.is_some_and(|f| f.multi) => {
                list.push(value)
            }
            (_, slot, value) => {
                *slot = Value::Array(vec![slot.take(), value]);
                repeated.push(key);
            }
        }
    }
    Ok(Value::Object(out))
}

fn decode_value(attr: &genl_wire::Attr<'_>, kind: Kind) -> Result<Value, WireError> {
    Ok(match kind {
        Kind::U8 => attr.u8()?.into(),
        Kind::U16 => attr.u16()?.into(),
        Kind::U32 => attr.u32()?.into(),
        Kind::U64 => attr.u64()?.into(),
        Kind::S8 => attr.i8()?.into(),
        Kind::S16 => attr.i16()?.into(),
        Kind::S32 => attr.i32()?.into(),
        Kind::S64 => attr.i64()?.into(),
        Kind::Uint => attr.uint()?.into(),
        Kind::Sint => attr.sint()?.into(),
        Kind::U16Be => attr.u16_be()?.into(),
        Kind::U32Be => attr.u32_be()?.into(),
        Kind::Ipv4 => std::net::Ipv4Addr::from(attr.u32_be()?).to_string().into(),
        Kind::Ipv6 => {
            let b: [u8; 16] = attr.bytes().try_into().map_err(|_| WireError::BadPayload {
                kind: attr.kind(),
                expected: "16-byte IPv6 address",
                len: attr.bytes().len(),
            })?;
            std::net::Ipv6Addr::from(b).to_string().into()
        }
        Kind::Str => attr.str()?.into(),
        Kind::Binary => hex(attr.bytes()).into(),
        Kind::Flag => true.into(),
        Kind::Bitfield32 => {
            let (value, selector) = attr.bitfield32()?;
            serde_json::json!({"value": value, "selector": selector})
        }
        Kind::Nested(fields) => decode(attr.bytes(), fields)?,
        Kind::NestedArray(fields) => Value::Array(
            Attrs::new(attr.bytes())
                .map(|entry| decode(entry?.bytes(), fields))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Encode the JSON object `value` as attributes declared by `fields`,
/// through the one input path ([`crate::input`]): a key the table does not
/// declare is refused, naming it and listing the accepted ones. An array
/// for a field that is not itself an array type is the attribute repeated,
/// as `decode` shows it.
pub fn encode(value: &Value, fields: &[Field]) -> Result<Vec<u8>, EncodeError> {
    let key = table_key(fields);
    crate::input::encode_once(&key, |b| register(b, fields), value)
}

/// Encode `value` into an existing writer.
pub fn encode_into(w: &mut AttrWriter<'_>, value: &Value, fields: &[Field]) -> Result<(), EncodeError> {
    let bytes = encode(value, fields)?;
    for attr in Attrs::new(&bytes) {
        let attr = attr.map_err(|e| EncodeError {
            path: "$".into(),
            message: e.to_string(),
        })?;
        w.put_bytes(attr.raw_kind(), attr.bytes())
            .map_err(|e| EncodeError {
                path: "$".into(),
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// A table's address names its set while one input is encoded (tables may
/// be built at run time, so the name does not outlive the call).
fn table_key(fields: &[Field]) -> String {
    format!("table@{:p}+{}", fields.as_ptr(), fields.len())
}

fn register(b: &mut InputSpec, fields: &[Field]) -> String {
    b.set(&table_key(fields), |b| {
        fields
            .iter()
            .map(|f| (f.id, f.name.to_owned(), input_def(b, f.kind)))
            .collect()
    })
}

fn input_def(b: &mut InputSpec, kind: Kind) -> InputDef {
    let def = match kind {
        Kind::U8 => InputDef::kind(AttrKind::U8),
        Kind::U16 => InputDef::kind(AttrKind::U16),
        Kind::U32 => InputDef::kind(AttrKind::U32),
        Kind::U64 => InputDef::kind(AttrKind::U64),
        Kind::S8 => InputDef::kind(AttrKind::S8),
        Kind::S16 => InputDef::kind(AttrKind::S16),
        Kind::S32 => InputDef::kind(AttrKind::S32),
        Kind::S64 => InputDef::kind(AttrKind::S64),
        Kind::Uint => InputDef::kind(AttrKind::Uint),
        Kind::Sint => InputDef::kind(AttrKind::Sint),
        Kind::U16Be => InputDef::big_endian(AttrKind::U16),
        Kind::U32Be => InputDef::big_endian(AttrKind::U32),
        Kind::Ipv4 => InputDef::address(false),
        Kind::Ipv6 => InputDef::address(true),
        Kind::Str => InputDef::kind(AttrKind::String),
        Kind::Binary => InputDef::kind(AttrKind::Binary),
        Kind::Flag => InputDef::kind(AttrKind::Flag),
        Kind::Bitfield32 => InputDef::kind(AttrKind::Bitfield32),
        Kind::Nested(fields) => InputDef::nest(register(b, fields)),
        Kind::NestedArray(fields) => return InputDef::nested_array(register(b, fields)),
    };
    def.repeated()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ADDR: &[Field] = &[
        Field::new(1, "family", Kind::U16),
        Field::new(2, "id", Kind::U8),
        Field::new(3, "addr4", Kind::Ipv4),
        Field::new(4, "addr6", Kind::Ipv6),
        Field::new(5, "port", Kind::U16),
        Field::new(6, "flags", Kind::U32),
        Field::new(7, "if-idx", Kind::S32),
    ];
    const TOP: &[Field] = &[
        Field::new(1, "addr", Kind::Nested(ADDR)),
        Field::new(2, "list", Kind::NestedArray(ADDR)),
        Field::new(3, "on", Kind::Flag),
        Field::new(4, "blob", Kind::Binary),
    ];

    #[test]
    fn round_trips_every_kind_used_by_plugins() {
        let v = json!({
            "addr": {"family": 2, "id": 7, "addr4": "192.0.2.1", "port": 0, "flags": 1, "if-idx": -1},
            "list": [{"addr6": "2001:db8::1"}, {"id": 3}],
            "on": true,
            "blob": "00ff10",
        });
        let bytes = encode(&v, TOP).unwrap();
        assert_eq!(decode(&bytes, TOP).unwrap(), v);
    }

    #[test]
    fn unknown_and_repeated_attributes_are_kept() {
        let mut w = AttrWriter::new();
        w.put_u8(2, 1).put_u8(2, 2).put_u8(2, 3).put_u32(99, 5);
        let bytes = w.finish();
        let v = decode(&bytes, ADDR).unwrap();
        assert_eq!(v["id"], json!([1, 2, 3]));
        let again = encode(&json!({"id": [1, 2, 3]}), ADDR).unwrap();
        assert_eq!(again, bytes[..24]);
        assert_eq!(v["attr-99"], json!("05000000"));
    }

    #[test]
    fn multi_fields_are_arrays_even_once() {
        const SET: &[Field] = &[Field::new(1, "bit", Kind::U8).multi()];
        let v = decode(&encode(&json!({"bit": [4]}), SET).unwrap(), SET).unwrap();
        assert_eq!(v, json!({"bit": [4]}));
    }

    #[test]
    fn bad_json_names_the_field() {
        assert_eq!(
            encode(&json!({"nope": 1}), ADDR).unwrap_err().to_string(),
            "$.nope: unknown key; accepted: family, id, addr4, addr6, port, flags, if-idx"
        );
        let e = encode(&json!({"addr": {"id": 300}}), TOP)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("$.addr.id: "), "{e}");
        assert!(e.contains("255"), "{e}");
        assert!(encode(&json!({"addr4": "not-an-ip"}), ADDR).is_err());
        assert!(encode(&json!([1]), ADDR).is_err());
    }
}
