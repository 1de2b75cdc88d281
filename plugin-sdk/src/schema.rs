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

use crate::hex::{hex, unhex};

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

/// Why JSON could not be encoded as attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A key the table does not declare.
    #[error("unknown field '{0}'")]
    UnknownField(String),
    /// A value of the wrong JSON type or out of range.
    #[error("field '{field}': {reason}")]
    BadValue {
        /// The key.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// An attribute larger than netlink allows.
    #[error("{0}")]
    TooLarge(#[from] genl_wire::attr::TooLarge),
}

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

/// Encode the JSON object `value` as attributes declared by `fields`.
pub fn encode(value: &Value, fields: &[Field]) -> Result<Vec<u8>, EncodeError> {
    let mut w = AttrWriter::new();
    encode_into(&mut w, value, fields)?;
    Ok(w.finish())
}

/// Encode `value` into an existing writer.
pub fn encode_into(w: &mut AttrWriter<'_>, value: &Value, fields: &[Field]) -> Result<(), EncodeError> {
    let Value::Object(map) = value else {
        return Err(EncodeError::BadValue {
            field: "(top)".into(),
            reason: "expected a JSON object".into(),
        });
    };
    for (key, v) in map {
        let f = fields
            .iter()
            .find(|f| f.name == key)
            .ok_or_else(|| EncodeError::UnknownField(key.clone()))?;
        match (f.kind, v) {
            // As in `decode`: an array for a field that is not itself an
            // array type is the attribute repeated.
            (Kind::NestedArray(_), _) => encode_field(w, f, v)?,
            (_, Value::Array(items)) => {
                for item in items {
                    encode_field(w, f, item)?;
                }
            }
            _ => encode_field(w, f, v)?,
        }
    }
    Ok(())
}

fn encode_field(w: &mut AttrWriter<'_>, f: &Field, v: &Value) -> Result<(), EncodeError> {
    let bad = |reason: &str| EncodeError::BadValue {
        field: f.name.to_owned(),
        reason: reason.to_owned(),
    };
    let unsigned = |max: u64| -> Result<u64, EncodeError> {
        v.as_u64()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad(&format!("expected an integer 0..={max}")))
    };
    let signed = |min: i64, max: i64| -> Result<i64, EncodeError> {
        v.as_i64()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| bad(&format!("expected an integer {min}..={max}")))
    };
    match f.kind {
        Kind::U8 => {
            w.put_u8(f.id, unsigned(u8::MAX.into())? as u8);
        }
        Kind::U16 => {
            w.put_u16(f.id, unsigned(u16::MAX.into())? as u16);
        }
        Kind::U32 => {
            w.put_u32(f.id, unsigned(u32::MAX.into())? as u32);
        }
        Kind::U64 => {
            w.put_u64(f.id, unsigned(u64::MAX)?);
        }
        Kind::Uint => {
            w.put_uint(f.id, unsigned(u64::MAX)?);
        }
        Kind::S8 => {
            w.put_bytes(
                f.id,
                &(signed(i8::MIN.into(), i8::MAX.into())? as i8).to_ne_bytes(),
            )?;
        }
        Kind::S16 => {
            w.put_bytes(
                f.id,
                &(signed(i16::MIN.into(), i16::MAX.into())? as i16).to_ne_bytes(),
            )?;
        }
        Kind::S32 => {
            w.put_i32(f.id, signed(i32::MIN.into(), i32::MAX.into())? as i32);
        }
        Kind::S64 | Kind::Sint => {
            let n = signed(i64::MIN, i64::MAX)?;
            if matches!(f.kind, Kind::Sint) {
                w.put_sint(f.id, n);
            } else {
                w.put_i64(f.id, n);
            }
        }
        Kind::U16Be => {
            w.put_bytes(f.id, &(unsigned(u16::MAX.into())? as u16).to_be_bytes())?;
        }
        Kind::U32Be => {
            w.put_bytes(f.id, &(unsigned(u32::MAX.into())? as u32).to_be_bytes())?;
        }
        Kind::Ipv4 => {
            let ip: std::net::Ipv4Addr = v
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("expected an IPv4 address like \"192.0.2.1\""))?;
            w.put_bytes(f.id, &ip.octets())?;
        }
        Kind::Ipv6 => {
            let ip: std::net::Ipv6Addr = v
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("expected an IPv6 address like \"2001:db8::1\""))?;
            w.put_bytes(f.id, &ip.octets())?;
        }
        Kind::Str => {
            w.put_str(f.id, v.as_str().ok_or_else(|| bad("expected a string"))?)?;
        }
        Kind::Binary => {
            let bytes = v
                .as_str()
                .and_then(unhex)
                .ok_or_else(|| bad("expected a hex string"))?;
            w.put_bytes(f.id, &bytes)?;
        }
        Kind::Flag => match v {
            Value::Bool(true) => {
                w.put_flag(f.id);
            }
            Value::Bool(false) => {}
            _ => return Err(bad("expected true or false")),
        },
        Kind::Bitfield32 => {
            let value = v
                .get("value")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            let selector = v
                .get("selector")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            let (Some(value), Some(selector)) = (value, selector) else {
                return Err(bad("expected {\"value\": u32, \"selector\": u32}"));
            };
            let mut b = value.to_ne_bytes().to_vec();
            b.extend_from_slice(&selector.to_ne_bytes());
            w.put_bytes(f.id, &b)?;
        }
        Kind::Nested(fields) => {
            let token = w.begin_nested(f.id);
            encode_into(w, v, fields)?;
            w.end_nested(token)?;
        }
        Kind::NestedArray(fields) => {
            let entries = v.as_array().ok_or_else(|| bad("expected an array of objects"))?;
            let token = w.begin_nested(f.id);
            for (i, entry) in entries.iter().enumerate() {
                let inner = w.begin_nested(u16::try_from(i + 1).map_err(|_| bad("array too long"))?);
                encode_into(w, entry, fields)?;
                w.end_nested(inner)?;
            }
            w.end_nested(token)?;
        }
    }
    Ok(())
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
            "unknown field 'nope'"
        );
        let e = encode(&json!({"id": 300}), ADDR).unwrap_err().to_string();
        assert_eq!(e, "field 'id': expected an integer 0..=255");
        assert!(encode(&json!({"addr4": "not-an-ip"}), ADDR).is_err());
        assert!(encode(&json!([1]), ADDR).is_err());
    }
}
